package cosmian

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
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

var stateNames = map[string]string{
	"0x00000001": StatePreActive, "0x00000002": StateActive, "0x00000003": StateDeactivated,
	"0x00000004": StateCompromised, "0x00000005": StateDestroyed, "0x00000006": StateDestroyedCompromised,
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

// ---------------------------------------------------------------------------------------------
// Create

// CreateRequest describes a new AES key.
type CreateRequest struct {
	UID            string     // empty: the server picks a UUID
	Length         int32      // bits; default 256
	UsageMask      int32      // default UsageXKS (what XKS CreateKey uses)
	ActivationDate *time.Time // nil: absent (the server then leaves the key PreActive)
	Tags           []string   // user tags; "_"-prefixed ones are dropped
}

// Create creates an AES key and returns its unique identifier.
func (c *Client) Create(ctx context.Context, req CreateRequest) (string, error) {
	const op = "Create"
	if req.Length == 0 {
		req.Length = 256
	}
	if req.Length != 128 && req.Length != 192 && req.Length != 256 {
		return "", fmt.Errorf("cosmian: %s: AES length %d is not 128, 192 or 256", op, req.Length)
	}
	if req.UsageMask == 0 {
		req.UsageMask = UsageXKS
	}
	tags, err := userTags(op, req.Tags)
	if err != nil {
		return "", err
	}
	attrs := []ttlv.Node{
		ttlv.Enum("CryptographicAlgorithm", "AES"),
		ttlv.Int("CryptographicLength", req.Length),
		ttlv.Int("CryptographicUsageMask", req.UsageMask),
		ttlv.Enum("KeyFormatType", "TransparentSymmetricKey"),
		ttlv.Enum("ObjectType", "SymmetricKey"),
	}
	if req.ActivationDate != nil {
		attrs = append(attrs, ttlv.Date("ActivationDate", *req.ActivationDate))
	}
	if req.UID != "" {
		attrs = append(attrs, ttlv.Text("UniqueIdentifier", req.UID))
	}
	if len(tags) > 0 {
		ta, err := c.tagAttribute(tags)
		if err != nil {
			return "", err
		}
		attrs = append(attrs, ta)
	}
	n, err := c.kmip(ctx, op, ttlv.Struct(op,
		ttlv.Enum("ObjectType", "SymmetricKey"),
		ttlv.Struct("Attributes", attrs...),
	), 0, false)
	if err != nil {
		return "", err
	}
	return requireUID(op, n)
}

// ---------------------------------------------------------------------------------------------
// Import

// ImportRequest imports a raw AES key.
type ImportRequest struct {
	UID             string // empty: the server picks a UUID
	ReplaceExisting bool
	// Material is the raw key. It is not retained: the encoded request is wiped after sending.
	// The caller still owns (and should wipe) Material itself.
	Material []byte
	// Attributes: Algorithm (default "AES"), Length (default 8*len(Material); must match),
	// UsageMask (0: absent, the server applies its default), ActivationDate (zero: absent,
	// the key then comes up PreActive) and user Tags are sent; the rest is ignored.
	Attributes KeyAttributes
}

// Import imports a symmetric key (TransparentSymmetricKey format, as Cosmian's own import
// vectors and XKS-created keys use) and returns its unique identifier.
func (c *Client) Import(ctx context.Context, req ImportRequest) (string, error) {
	const op = "Import"
	if len(req.Material) == 0 {
		return "", fmt.Errorf("cosmian: %s: empty key material", op)
	}
	if strings.HasPrefix(req.UID, "[") {
		return "", fmt.Errorf("cosmian: %s: a unique identifier may not start with '['", op)
	}
	bits := int64(len(req.Material)) * 8
	if bits > math.MaxInt32 {
		return "", fmt.Errorf("cosmian: %s: key material too long", op)
	}
	a := req.Attributes
	if a.Algorithm == "" {
		a.Algorithm = "AES"
	}
	if a.Length == 0 {
		a.Length = int32(bits)
	}
	if int64(a.Length) != bits {
		return "", fmt.Errorf("cosmian: %s: attributes say %d bits but the material has %d", op, a.Length, bits)
	}
	tags, err := userTags(op, a.Tags)
	if err != nil {
		return "", err
	}
	attrs := []ttlv.Node{
		ttlv.Enum("CryptographicAlgorithm", a.Algorithm),
		ttlv.Int("CryptographicLength", a.Length),
	}
	if a.UsageMask != 0 {
		attrs = append(attrs, ttlv.Int("CryptographicUsageMask", a.UsageMask))
	}
	attrs = append(attrs,
		ttlv.Enum("KeyFormatType", "TransparentSymmetricKey"),
		ttlv.Enum("ObjectType", "SymmetricKey"),
	)
	if !a.ActivationDate.IsZero() {
		attrs = append(attrs, ttlv.Date("ActivationDate", a.ActivationDate))
	}
	if len(tags) > 0 {
		ta, err := c.tagAttribute(tags)
		if err != nil {
			return "", err
		}
		attrs = append(attrs, ta)
	}
	reqNode := ttlv.Struct(op,
		ttlv.Text("UniqueIdentifier", req.UID),
		ttlv.Enum("ObjectType", "SymmetricKey"),
		ttlv.Bool("ReplaceExisting", req.ReplaceExisting),
		ttlv.Struct("Attributes", attrs...),
		ttlv.Struct("SymmetricKey",
			ttlv.Struct("KeyBlock",
				ttlv.Enum("KeyFormatType", "TransparentSymmetricKey"),
				ttlv.Struct("KeyValue",
					ttlv.Struct("KeyMaterial", ttlv.Bytes("Key", req.Material)),
				),
				ttlv.Enum("CryptographicAlgorithm", a.Algorithm),
				ttlv.Int("CryptographicLength", a.Length),
			),
		),
	)
	n, err := c.kmip(ctx, op, reqNode, 2*len(req.Material)+64*len(tags), false)
	if err != nil {
		return "", err
	}
	return requireUID(op, n)
}

// ---------------------------------------------------------------------------------------------
// Export / Get

// ExportedKey is a symmetric key read from a server.
type ExportedKey struct {
	UID        string
	Material   []byte // raw key, or the wrapped blob if Wrapped
	Attributes KeyAttributes
	Wrapped    bool // the server returned the key wrapped (KeyWrappingData present)
}

// Wipe zeroes Material.
func (k *ExportedKey) Wipe() {
	if k != nil {
		clear(k.Material)
	}
}

// Export reads a key with KMIP Export, which (unlike Get) also works on revoked keys. With
// unwrap, it asks for KeyFormatType Raw and KeyWrapType NotWrapped, and a key that still comes
// back wrapped is an error wrapping ErrWrapped; without, the key comes as registered (Wrapped
// tells). A Sensitive key is refused by the server (ErrSensitive). The reply body and the
// decoded tree are wiped.
func (c *Client) Export(ctx context.Context, uid string, unwrap bool) (*ExportedKey, error) {
	const op = "Export"
	if err := checkUID(op, uid); err != nil {
		return nil, err
	}
	fields := []ttlv.Node{ttlv.Text("UniqueIdentifier", uid)}
	if unwrap {
		fields = append(fields,
			ttlv.Enum("KeyFormatType", "Raw"),
			ttlv.Enum("KeyWrapType", "NotWrapped"),
		)
	}
	k, err := c.readKey(ctx, op, ttlv.Struct(op, fields...))
	if err != nil {
		return nil, err
	}
	if unwrap && k.Wrapped {
		k.Wipe()
		return nil, fmt.Errorf("cosmian: %s %s: %w", op, uid, ErrWrapped)
	}
	return k, nil
}

// Get reads a key with KMIP Get (refused by the server for Deactivated keys: ErrWrongState),
// in the server's default form (Raw for a plaintext key, as registered for a wrapped one).
func (c *Client) Get(ctx context.Context, uid string) (*ExportedKey, error) {
	const op = "Get"
	if err := checkUID(op, uid); err != nil {
		return nil, err
	}
	return c.readKey(ctx, op, ttlv.Struct(op, ttlv.Text("UniqueIdentifier", uid)))
}

func (c *Client) readKey(ctx context.Context, op string, req ttlv.Node) (*ExportedKey, error) {
	n, err := c.kmip(ctx, op, req, 0, true)
	if err != nil {
		return nil, err
	}
	defer n.Wipe()
	return c.parseKey(op, n)
}

// parseKey reads an ExportResponse/GetResponse. The returned material is a copy; the caller
// wipes n.
func (c *Client) parseKey(op string, n ttlv.Node) (*ExportedKey, error) {
	uid, err := requireUID(op, n)
	if err != nil {
		return nil, err
	}
	obj, ok := n.Child("SymmetricKey")
	if !ok {
		ot := text(n, "ObjectType")
		if ot != "" && ot != "SymmetricKey" {
			return nil, fmt.Errorf("cosmian: %s %s: object is a %s, not a SymmetricKey", op, uid, ot)
		}
		return nil, fmt.Errorf("cosmian: %s %s: %w: no SymmetricKey", op, uid, ErrBadResponse)
	}
	kb, ok := obj.Child("KeyBlock")
	if !ok {
		return nil, fmt.Errorf("cosmian: %s %s: %w: no KeyBlock", op, uid, ErrBadResponse)
	}
	k := &ExportedKey{UID: uid}
	_, k.Wrapped = kb.Child("KeyWrappingData")
	var material []byte
	kv, _ := kb.Child("KeyValue")
	switch kv.Type {
	case ttlv.ByteString: // wrapped: the key value is the opaque blob
		material = kv.Bytes
	case ttlv.Structure:
		km, _ := kv.Child("KeyMaterial")
		switch km.Type {
		case ttlv.ByteString: // Raw
			material = km.Bytes
		case ttlv.Structure: // TransparentSymmetricKey
			if key, ok := km.Child("Key"); ok && key.Type == ttlv.ByteString {
				material = key.Bytes
			}
		}
		if ia, ok := kv.Child("Attributes"); ok {
			c.parseAttributes(ia, &k.Attributes)
		}
	}
	if len(material) == 0 {
		return nil, fmt.Errorf("cosmian: %s %s: %w: no key material", op, uid, ErrBadResponse)
	}
	k.Material = make([]byte, len(material))
	copy(k.Material, material)

	// Key-block fields, then the KMIP 2.1 top-level Attributes, override the embedded ones.
	if v, ok := kb.Child("CryptographicAlgorithm"); ok {
		k.Attributes.Algorithm = enumText(v)
	}
	if v, ok := kb.Child("CryptographicLength"); ok && v.Type == ttlv.Integer {
		k.Attributes.Length = int32(v.Int)
	}
	if ta, ok := n.Child("Attributes"); ok {
		c.parseAttributes(ta, &k.Attributes)
	}
	if v, ok := kb.Child("KeyFormatType"); ok {
		k.Attributes.KeyFormatType = enumText(v)
	}
	k.Attributes.ObjectType = "SymmetricKey"
	return k, nil
}

// ---------------------------------------------------------------------------------------------
// GetAttributes

// getAttributesRefs are the standard attributes requested. Cosmian returns only the referenced
// attributes when references are given, and tags only for the vendor reference (or Tag), never
// by default (crate/server/src/core/operations/attributes/get.rs).
var getAttributesRefs = []string{
	"ObjectType", "CryptographicAlgorithm", "CryptographicLength", "CryptographicUsageMask",
	"KeyFormatType", "State", "ActivationDate", "DeactivationDate", "Sensitive",
}

// GetAttributes returns the key's standard attributes and tags.
func (c *Client) GetAttributes(ctx context.Context, uid string) (*KeyAttributes, error) {
	const op = "GetAttributes"
	if err := checkUID(op, uid); err != nil {
		return nil, err
	}
	fields := []ttlv.Node{
		ttlv.Text("UniqueIdentifier", uid),
		ttlv.Struct("AttributeReference",
			ttlv.Text("VendorIdentification", c.cfg.VendorID),
			ttlv.Text("AttributeName", "tag"),
		),
	}
	for _, r := range getAttributesRefs {
		fields = append(fields, ttlv.Enum("AttributeReference", r))
	}
	n, err := c.kmip(ctx, op, ttlv.Struct(op, fields...), 0, false)
	if err != nil {
		return nil, err
	}
	attrs, ok := n.Child("Attributes")
	if !ok {
		return nil, fmt.Errorf("cosmian: %s %s: %w: no Attributes", op, uid, ErrBadResponse)
	}
	var a KeyAttributes
	c.parseAttributes(attrs, &a)
	return &a, nil
}

// ---------------------------------------------------------------------------------------------
// Locate

// LocateRequest selects objects carrying all Tags.
type LocateRequest struct {
	Tags       []string
	ObjectType string // default "SymmetricKey"
	PageSize   int    // default and maximum 1000 (the server's cap)
}

// maxLocateResults bounds the total a Locate will accumulate.
const maxLocateResults = 10_000_000

// Locate returns the unique identifiers of the objects the caller owns or has a grant on that
// carry every tag (destroyed objects excluded by the server). It pages with MaximumItems and
// OffsetItems until a short page. Cosmian up to 5.26 ignores OffsetItems (it always returns the
// first MaximumItems, capped at 1000): a full page that brings nothing new is detected and the
// ids found so far are returned with an error wrapping ErrLocateIncomplete.
func (c *Client) Locate(ctx context.Context, req LocateRequest) ([]string, error) {
	const op = "Locate"
	if req.ObjectType == "" {
		req.ObjectType = "SymmetricKey"
	}
	if req.PageSize <= 0 || req.PageSize > MaxLocatePage {
		req.PageSize = MaxLocatePage
	}
	attrs := []ttlv.Node{ttlv.Enum("ObjectType", req.ObjectType)}
	if len(req.Tags) > 0 {
		for _, t := range req.Tags {
			if t == "" {
				return nil, fmt.Errorf("cosmian: %s: empty tag", op)
			}
		}
		ta, err := c.tagAttribute(req.Tags)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, ta)
	}
	var out []string
	seen := make(map[string]struct{})
	for offset := 0; ; {
		fields := []ttlv.Node{ttlv.Int("MaximumItems", int32(req.PageSize))}
		if offset > 0 {
			fields = append(fields, ttlv.Int("OffsetItems", int32(offset)))
		}
		fields = append(fields, ttlv.Struct("Attributes", attrs...))
		n, err := c.kmip(ctx, op, ttlv.Struct(op, fields...), 0, false)
		if err != nil {
			return out, err
		}
		page := 0
		fresh := 0
		for _, ch := range n.All("UniqueIdentifier") {
			if ch.Type != ttlv.TextString {
				continue
			}
			page++
			if _, dup := seen[ch.Str]; dup {
				continue
			}
			seen[ch.Str] = struct{}{}
			out = append(out, ch.Str)
			fresh++
		}
		if page < req.PageSize {
			return out, nil
		}
		if fresh == 0 {
			return out, fmt.Errorf("cosmian: %s: %w: %d ids after %d", op, ErrLocateIncomplete, len(out), offset+page)
		}
		offset += page
		if offset > math.MaxInt32-MaxLocatePage || len(out) > maxLocateResults {
			return out, fmt.Errorf("cosmian: %s: more than %d results", op, len(out))
		}
	}
}

// ---------------------------------------------------------------------------------------------
// Encrypt / Decrypt

// EncryptResult is an AES-GCM ciphertext with its server-chosen nonce and tag.
type EncryptResult struct {
	Ciphertext, IV, Tag []byte
}

func gcmParams() ttlv.Node {
	return ttlv.Struct("CryptographicParameters",
		ttlv.Enum("BlockCipherMode", "GCM"),
		ttlv.Enum("CryptographicAlgorithm", "AES"),
	)
}

// Encrypt encrypts with AES-GCM under key uid; the server picks a 12-byte nonce. aad may be nil.
func (c *Client) Encrypt(ctx context.Context, uid string, plaintext, aad []byte) (*EncryptResult, error) {
	const op = "Encrypt"
	if err := checkUID(op, uid); err != nil {
		return nil, err
	}
	fields := []ttlv.Node{
		ttlv.Text("UniqueIdentifier", uid),
		gcmParams(),
		ttlv.Bytes("Data", nonNil(plaintext)),
	}
	if len(aad) > 0 {
		fields = append(fields, ttlv.Bytes("AuthenticatedEncryptionAdditionalData", aad))
	}
	n, err := c.kmip(ctx, op, ttlv.Struct(op, fields...), 2*(len(plaintext)+len(aad)), false)
	if err != nil {
		return nil, err
	}
	data, ok1 := n.Child("Data")
	iv, ok2 := n.Child("IVCounterNonce")
	tag, ok3 := n.Child("AuthenticatedEncryptionTag")
	if !ok1 || !ok2 || !ok3 || data.Type != ttlv.ByteString || iv.Type != ttlv.ByteString || tag.Type != ttlv.ByteString {
		return nil, fmt.Errorf("cosmian: %s %s: %w: missing Data, IVCounterNonce or AuthenticatedEncryptionTag", op, uid, ErrBadResponse)
	}
	if len(iv.Bytes) != 12 || len(tag.Bytes) != 16 {
		return nil, fmt.Errorf("cosmian: %s %s: %w: nonce %d bytes, tag %d bytes (want 12, 16)", op, uid, ErrBadResponse, len(iv.Bytes), len(tag.Bytes))
	}
	return &EncryptResult{Ciphertext: nonNil(data.Bytes), IV: iv.Bytes, Tag: tag.Bytes}, nil
}

// Decrypt decrypts AES-GCM. The reply body and decoded tree are wiped; the caller owns (and
// should wipe) the returned plaintext.
func (c *Client) Decrypt(ctx context.Context, uid string, ciphertext, iv, tag, aad []byte) ([]byte, error) {
	const op = "Decrypt"
	if err := checkUID(op, uid); err != nil {
		return nil, err
	}
	if len(iv) == 0 || len(tag) == 0 {
		return nil, fmt.Errorf("cosmian: %s: IV and tag are required", op)
	}
	fields := []ttlv.Node{
		ttlv.Text("UniqueIdentifier", uid),
		gcmParams(),
		ttlv.Bytes("Data", nonNil(ciphertext)),
		ttlv.Bytes("IVCounterNonce", iv),
	}
	if len(aad) > 0 {
		fields = append(fields, ttlv.Bytes("AuthenticatedEncryptionAdditionalData", aad))
	}
	fields = append(fields, ttlv.Bytes("AuthenticatedEncryptionTag", tag))
	n, err := c.kmip(ctx, op, ttlv.Struct(op, fields...), 2*(len(ciphertext)+len(aad)+len(iv)+len(tag)), true)
	if err != nil {
		return nil, err
	}
	defer n.Wipe()
	data, ok := n.Child("Data")
	if !ok || data.Type != ttlv.ByteString {
		return nil, fmt.Errorf("cosmian: %s %s: %w: no Data", op, uid, ErrBadResponse)
	}
	out := make([]byte, len(data.Bytes))
	copy(out, data.Bytes)
	return out, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// ---------------------------------------------------------------------------------------------
// Revoke / Destroy

var revocationCodes = []string{
	RevocationUnspecified, RevocationKeyCompromise, RevocationCACompromise, RevocationAffiliationChanged,
	RevocationSuperseded, RevocationCessationOfOperation, RevocationPrivilegeWithdrawn,
}

// Revoke revokes a key: KeyCompromise/CACompromise make it Compromised, any other code
// Deactivated. message may be empty.
func (c *Client) Revoke(ctx context.Context, uid, reasonCode, message string) error {
	const op = "Revoke"
	if err := checkUID(op, uid); err != nil {
		return err
	}
	if !slices.Contains(revocationCodes, reasonCode) {
		return fmt.Errorf("cosmian: %s: unknown revocation reason %q", op, reasonCode)
	}
	reason := []ttlv.Node{ttlv.Enum("RevocationReasonCode", reasonCode)}
	if message != "" {
		reason = append(reason, ttlv.Text("RevocationMessage", message))
	}
	n, err := c.kmip(ctx, op, ttlv.Struct(op,
		ttlv.Text("UniqueIdentifier", uid),
		ttlv.Struct("RevocationReason", reason...),
	), len(message), false)
	if err != nil {
		return err
	}
	_, err = requireUID(op, n)
	return err
}

// Destroy destroys a key (an Active key must be revoked first: ErrWrongState). With remove,
// Cosmian deletes the row so the unique identifier can be reused.
func (c *Client) Destroy(ctx context.Context, uid string, remove bool) error {
	const op = "Destroy"
	if err := checkUID(op, uid); err != nil {
		return err
	}
	fields := []ttlv.Node{ttlv.Text("UniqueIdentifier", uid)}
	if remove {
		fields = append(fields, ttlv.Bool("Remove", true))
	}
	n, err := c.kmip(ctx, op, ttlv.Struct(op, fields...), 0, false)
	if err != nil {
		return err
	}
	_, err = requireUID(op, n)
	return err
}
