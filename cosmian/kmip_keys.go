package cosmian

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

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
// tells). A Sensitive key is refused by the server (ErrSensitive), and on Cosmian ≥ 5.28.0 a key
// that is not extractable too (ErrNotExtractable). The reply body and the decoded tree are wiped.
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
	"Extractable", "NeverExtractable",
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
