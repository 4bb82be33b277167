package cosmian

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

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
