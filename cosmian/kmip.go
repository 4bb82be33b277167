package cosmian

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

// CryptographicUsageMask bits (KMIP 2.1 §11.15).
const (
	UsageSign         int32 = 0x1
	UsageVerify       int32 = 0x2
	UsageEncrypt      int32 = 0x4
	UsageDecrypt      int32 = 0x8
	UsageWrapKey      int32 = 0x10
	UsageUnwrapKey    int32 = 0x20
	UsageKeyAgreement int32 = 0x800
	UsageUnrestricted int32 = 0x200000

	// UsageXKS is the mask Cosmian's XKS CreateKey gives a key (Encrypt|Decrypt|WrapKey|UnwrapKey).
	UsageXKS = UsageEncrypt | UsageDecrypt | UsageWrapKey | UsageUnwrapKey
)

// Object states as Cosmian writes them.
const (
	StatePreActive            = "PreActive"
	StateActive               = "Active"
	StateDeactivated          = "Deactivated"
	StateCompromised          = "Compromised"
	StateDestroyed            = "Destroyed"
	StateDestroyedCompromised = "Destroyed_Compromised"
)

// Revocation reason codes accepted by Revoke.
const (
	RevocationUnspecified          = "Unspecified"
	RevocationKeyCompromise        = "KeyCompromise"
	RevocationCACompromise         = "CACompromise"
	RevocationAffiliationChanged   = "AffiliationChanged"
	RevocationSuperseded           = "Superseded"
	RevocationCessationOfOperation = "CessationOfOperation"
	RevocationPrivilegeWithdrawn   = "PrivilegeWithdrawn"
)

// XKSServiceUser is the reserved identity Cosmian releases after 5.26.0 (PR #1107) run XKS
// calls under; XKSTag is the tag XKS CreateKey puts on its keys.
const (
	XKSServiceUser = "[aws-xks-service]"
	XKSTag         = "aws-xks"
)

// MaxLocatePage is Cosmian's server-side cap on Locate results (MAX_LOCATE_ITEMS, since 5.24).
const MaxLocatePage = 1000

// KeyAttributes are the attributes of a managed object that a migration carries over.
type KeyAttributes struct {
	ObjectType       string // "SymmetricKey"
	Algorithm        string // "AES"
	Length           int32  // bits
	UsageMask        int32
	State            string
	ActivationDate   time.Time // zero if absent
	DeactivationDate time.Time // zero if absent
	Tags             []string  // all tags, system ones ("_kk") included, sorted
	Sensitive        bool
	KeyFormatType    string
	// Extractable and NeverExtractable are the KMIP attributes, nil when the server did not
	// send them (Cosmian before 5.28 keeps only what a client set). Cosmian 5.28.0 refuses Get
	// and Export of a key with Extractable false or NeverExtractable true (ErrNotExtractable);
	// Exportable tells.
	Extractable, NeverExtractable *bool
}

// Exportable reports whether the attributes let a server that enforces Extractable and
// NeverExtractable (Cosmian ≥ 5.28.0) hand the key out: Extractable absent or true (the KMIP
// default) and NeverExtractable absent or false.
func (a KeyAttributes) Exportable() bool {
	return (a.Extractable == nil || *a.Extractable) && (a.NeverExtractable == nil || !*a.NeverExtractable)
}

// UserTags returns the tags that do not start with "_" (system tags).
func (a KeyAttributes) UserTags() []string {
	var out []string
	for _, t := range a.Tags {
		if t != "" && !strings.HasPrefix(t, "_") {
			out = append(out, t)
		}
	}
	return out
}

// ---------------------------------------------------------------------------------------------
// Transport of one KMIP operation

// kmip posts one bare operation to /kmip/2_1 and returns the decoded "<op>Response" node. The
// encoded request is wiped once sent. If secretReply, the reply body is wiped after decoding
// (the caller then owns the tree and must Wipe it).
func (c *Client) kmip(ctx context.Context, op string, req ttlv.Node, sizeHint int, secretReply bool) (ttlv.Node, error) {
	// Pre-size so that Append never regrows: a regrown buffer would leave an unwiped copy of
	// the key or plaintext hex behind.
	body, err := ttlv.Append(make([]byte, 0, 1024+sizeHint), req)
	if err != nil {
		clear(body)
		return ttlv.Node{}, fmt.Errorf("cosmian: %s: encoding request: %w", op, err)
	}
	resp, err := c.do(ctx, op, http.MethodPost, "/kmip/2_1", body, "application/json")
	if err != nil {
		return ttlv.Node{}, err
	}
	n, err := ttlv.Unmarshal(resp.body)
	if secretReply {
		clear(resp.body)
	}
	if err != nil {
		n.Wipe()
		return ttlv.Node{}, fmt.Errorf("cosmian: %s: %w: %w", op, ErrBadResponse, err)
	}
	want := op + "Response"
	if n.Tag == "ResponseMessage" {
		return c.unwrapBatch(op, resp.status, n)
	}
	if n.Tag != want {
		n.Wipe()
		return ttlv.Node{}, fmt.Errorf("cosmian: %s: %w: tag %q, want %q", op, ErrBadResponse, n.Tag, want)
	}
	if n.Type != ttlv.Structure {
		return ttlv.Node{}, fmt.Errorf("cosmian: %s: %w: %s is not a structure", op, ErrBadResponse, want)
	}
	return n, nil
}

// unwrapBatch handles a reply in RequestMessage form (HTTP 200, one BatchItem); Cosmian uses it
// if a request was sent as a RequestMessage, and a proxy in between might.
func (c *Client) unwrapBatch(op string, status int, n ttlv.Node) (ttlv.Node, error) {
	items := n.All("BatchItem")
	if len(items) != 1 {
		n.Wipe()
		return ttlv.Node{}, fmt.Errorf("cosmian: %s: %w: %d batch items", op, ErrBadResponse, len(items))
	}
	it := items[0]
	rs, _ := it.Child("ResultStatus")
	if rs.Str != "Success" {
		reason, _ := it.Child("ResultReason")
		msg, _ := it.Child("ResultMessage")
		text := strings.TrimSpace(reason.Str + ": " + msg.Str)
		n.Wipe()
		e := newKMSError(op, status, []byte(text))
		if status >= 200 && status < 300 && e.Kind == ErrServer {
			e.Kind = ErrInvalidRequest
		}
		return ttlv.Node{}, e
	}
	p, ok := it.Child("ResponsePayload")
	if !ok {
		n.Wipe()
		return ttlv.Node{}, fmt.Errorf("cosmian: %s: %w: batch item without payload", op, ErrBadResponse)
	}
	p.Tag = op + "Response"
	p.Type = ttlv.Structure
	return p, nil
}

func text(n ttlv.Node, tag string) string {
	c, ok := n.Child(tag)
	if !ok || (c.Type != ttlv.TextString && c.Type != ttlv.Enumeration) {
		return ""
	}
	return c.Str
}

func requireUID(op string, n ttlv.Node) (string, error) {
	uid := text(n, "UniqueIdentifier")
	if uid == "" {
		return "", fmt.Errorf("cosmian: %s: %w: no UniqueIdentifier", op, ErrBadResponse)
	}
	return uid, nil
}

func checkUID(op, uid string) error {
	if uid == "" {
		return fmt.Errorf("cosmian: %s: empty unique identifier", op)
	}
	return nil
}

// tagAttribute is Cosmian's vendor attribute carrying tags: a JSON array in a TextString.
func (c *Client) tagAttribute(tags []string) (ttlv.Node, error) {
	b, err := json.Marshal(tags)
	if err != nil {
		return ttlv.Node{}, err
	}
	return ttlv.Struct("Attribute",
		ttlv.Text("VendorIdentification", c.cfg.VendorID),
		ttlv.Text("AttributeName", "tag"),
		ttlv.Text("AttributeValue", string(b)),
	), nil
}

func userTags(op string, tags []string) ([]string, error) {
	var out []string
	for _, t := range tags {
		if t == "" {
			return nil, fmt.Errorf("cosmian: %s: empty tag", op)
		}
		if strings.HasPrefix(t, "_") {
			continue // system tags are the server's; it refuses them from clients
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// ---------------------------------------------------------------------------------------------
// Attributes decoding

// stateNames maps a State as Cosmian sends it (hex or text) to the package's constant, so a
// decoded state never holds its own copy (callers keep one per key).
var stateNames = map[string]string{
	"0x00000001": StatePreActive, "0x00000002": StateActive, "0x00000003": StateDeactivated,
	"0x00000004": StateCompromised, "0x00000005": StateDestroyed, "0x00000006": StateDestroyedCompromised,
	StatePreActive: StatePreActive, StateActive: StateActive, StateDeactivated: StateDeactivated,
	StateCompromised: StateCompromised, StateDestroyed: StateDestroyed, StateDestroyedCompromised: StateDestroyedCompromised,
}

// parseAttributes reads an Attributes structure into a. Fields already set in a are kept unless
// the node has them (so several sources can be merged: top-level over key-block attributes).
func (c *Client) parseAttributes(n ttlv.Node, a *KeyAttributes) {
	for _, ch := range n.Children {
		switch ch.Tag {
		case "ObjectType":
			a.ObjectType = enumText(ch)
		case "CryptographicAlgorithm":
			a.Algorithm = enumText(ch)
		case "CryptographicLength":
			if ch.Type == ttlv.Integer {
				a.Length = int32(ch.Int)
			}
		case "CryptographicUsageMask":
			if ch.Type == ttlv.Integer {
				a.UsageMask = int32(ch.Int)
			}
		case "State":
			s := enumText(ch)
			if name, ok := stateNames[s]; ok {
				s = name
			}
			a.State = s
		case "ActivationDate":
			if ch.Type == ttlv.DateTime {
				a.ActivationDate = ch.Time
			}
		case "DeactivationDate":
			if ch.Type == ttlv.DateTime {
				a.DeactivationDate = ch.Time
			}
		case "Sensitive":
			if ch.Type == ttlv.Boolean {
				a.Sensitive = ch.Bool
			}
		case "Extractable", "NeverExtractable":
			if ch.Type == ttlv.Boolean {
				v := ch.Bool
				if ch.Tag == "Extractable" {
					a.Extractable = &v
				} else {
					a.NeverExtractable = &v
				}
			}
		case "KeyFormatType":
			a.KeyFormatType = enumText(ch)
		case "Attribute", "VendorAttribute", "VendorAttributes":
			c.parseVendorAttribute(ch, a)
		}
	}
}

func enumText(n ttlv.Node) string {
	if n.Type == ttlv.Enumeration || n.Type == ttlv.TextString {
		return n.Str
	}
	return ""
}

// parseVendorAttribute picks up the tag attribute. Current servers send a TextString JSON array;
// old documentation shows a hex ByteString and a nested "VendorAttributes" wrapper — both read.
func (c *Client) parseVendorAttribute(n ttlv.Node, a *KeyAttributes) {
	if _, ok := n.Child("VendorIdentification"); !ok {
		for _, ch := range n.Children {
			if ch.Type == ttlv.Structure {
				c.parseVendorAttribute(ch, a)
			}
		}
		return
	}
	if text(n, "VendorIdentification") != c.cfg.VendorID || text(n, "AttributeName") != "tag" {
		return
	}
	v, ok := n.Child("AttributeValue")
	if !ok {
		return
	}
	var raw []byte
	switch v.Type {
	case ttlv.TextString:
		raw = []byte(v.Str)
	case ttlv.ByteString:
		raw = v.Bytes
	default:
		return
	}
	var tags []string
	if json.Unmarshal(raw, &tags) != nil {
		return
	}
	tags = slices.DeleteFunc(tags, func(s string) bool { return s == "" })
	slices.Sort(tags)
	a.Tags = slices.Compact(tags)
}
