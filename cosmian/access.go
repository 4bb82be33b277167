package cosmian

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Access-rights operation names as on the wire (serde lowercase of Cosmian's KmipOperation).
const (
	OpCreate          = "create"
	OpCertify         = "certify"
	OpDecrypt         = "decrypt"
	OpDeriveKey       = "derivekey"
	OpDestroy         = "destroy"
	OpEncrypt         = "encrypt"
	OpExport          = "export"
	OpGet             = "get"
	OpGetAttributes   = "getattributes"
	OpHash            = "hash"
	OpImport          = "import"
	OpLocate          = "locate"
	OpMAC             = "mac"
	OpRevoke          = "revoke"
	OpRekey           = "rekey"
	OpSign            = "sign"
	OpSignatureVerify = "signatureverify"
	OpValidate        = "validate"
	OpSetAttribute    = "setattribute"
	OpModifyAttribute = "modifyattribute"
	OpAddAttribute    = "addattribute"
	OpDeleteAttribute = "deleteattribute"
	OpActivate        = "activate"
)

// Operations lists every access-rights operation name in Cosmian's enum order.
var Operations = []string{
	OpCreate, OpCertify, OpDecrypt, OpDeriveKey, OpDestroy, OpEncrypt, OpExport, OpGet,
	OpGetAttributes, OpHash, OpImport, OpLocate, OpMAC, OpRevoke, OpRekey, OpSign,
	OpSignatureVerify, OpValidate, OpSetAttribute, OpModifyAttribute, OpAddAttribute,
	OpDeleteAttribute, OpActivate,
}

// XKSServiceOperations are the grants Cosmian (after PR #1107) gives XKSServiceUser on XKS keys.
var XKSServiceOperations = []string{OpEncrypt, OpDecrypt, OpGetAttributes}

// Access is the body of POST /access/grant and /access/revoke.
type Access struct {
	UID        string   `json:"unique_identifier,omitempty"` // empty only for a pure "create" grant
	UserID     string   `json:"user_id"`                     // "*" = everyone
	Operations []string `json:"operation_types"`
}

// UserAccess is one entry of GET /access/list/{uid}.
type UserAccess struct {
	UserID     string   `json:"user_id"`
	Operations []string `json:"operations"`
}

// OwnedObject is one entry of GET /access/owned.
type OwnedObject struct {
	ObjectID string `json:"object_id"`
	State    string `json:"state"`
	// Its attributes, also in the reply, are not kept: GetAttributes reads one object's.
}

// ObtainedObject is one entry of GET /access/obtained.
type ObtainedObject struct {
	ObjectID   string   `json:"object_id"`
	OwnerID    string   `json:"owner_id"`
	State      string   `json:"state"`
	Operations []string `json:"operations"`
}

func (a Access) check(op string) error {
	if a.UserID == "" {
		return fmt.Errorf("cosmian: %s: user_id is required", op)
	}
	if len(a.Operations) == 0 {
		return fmt.Errorf("cosmian: %s: no operation", op)
	}
	for _, o := range a.Operations {
		if !isOperation(o) {
			return fmt.Errorf("cosmian: %s: unknown operation %q", op, o)
		}
		if o != OpCreate && a.UID == "" {
			return fmt.Errorf("cosmian: %s: unique_identifier is required for %q", op, o)
		}
	}
	return nil
}

func isOperation(o string) bool {
	for _, k := range Operations {
		if k == o {
			return true
		}
	}
	return false
}

// Grant grants operations on an object to a user (POST /access/grant; owner only).
func (c *Client) Grant(ctx context.Context, a Access) error {
	return c.postAccess(ctx, "access/grant", a)
}

// RevokeAccess removes granted operations (POST /access/revoke; owner only).
func (c *Client) RevokeAccess(ctx context.Context, a Access) error {
	return c.postAccess(ctx, "access/revoke", a)
}

func (c *Client) postAccess(ctx context.Context, op string, a Access) error {
	if err := a.check(op); err != nil {
		return err
	}
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("cosmian: %s: %w", op, err)
	}
	resp, err := c.do(ctx, op, http.MethodPost, "/"+op, body, "application/json")
	if err != nil {
		return err
	}
	var ok struct {
		Success json.RawMessage `json:"success"`
	}
	if err := json.Unmarshal(resp.body, &ok); err != nil || len(ok.Success) == 0 {
		return fmt.Errorf("cosmian: %s: %w: no \"success\" in reply", op, ErrBadResponse)
	}
	return nil
}

// ListAccess lists who has access to an object and which operations (GET /access/list/{uid};
// owner only).
func (c *Client) ListAccess(ctx context.Context, uid string) ([]UserAccess, error) {
	const op = "access/list"
	if err := checkUID(op, uid); err != nil {
		return nil, err
	}
	var out []UserAccess
	if err := c.getJSON(ctx, op, "/access/list/"+url.PathEscape(uid), &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Owned lists the objects the caller owns (GET /access/owned): their ids and states. Cosmian
// sends every object in one body with its attributes; it is decoded as it arrives (within
// ListTimeout and MaxListBytes), so 100 000 keys cost their ids, not the body.
func (c *Client) Owned(ctx context.Context) ([]OwnedObject, error) {
	const op = "access/owned"
	var out []OwnedObject
	err := c.exchange(ctx, c.cfg.ListTimeout, op, http.MethodGet, "/access/owned", nil, "", func(resp *http.Response) error {
		var err error
		out, err = decodeOwned(resp.Body, c.cfg.MaxListBytes)
		if errors.Is(err, ErrResponseTooLarge) {
			return fmt.Errorf("cosmian: %s %s%s: reading reply: %w", op, c.cfg.BaseURL, c.from(), err)
		}
		if err != nil {
			return fmt.Errorf("cosmian: %s: %w: %w", op, ErrBadResponse, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decodeOwned decodes a JSON array of owned objects from r as it arrives, reading at most max
// bytes (more is ErrResponseTooLarge).
func decodeOwned(r io.Reader, max int64) ([]OwnedObject, error) {
	lr := &io.LimitedReader{R: r, N: max + 1}
	dec := json.NewDecoder(lr)
	fail := func(err error) ([]OwnedObject, error) {
		if lr.N <= 0 {
			return nil, fmt.Errorf("%w (over %d bytes)", ErrResponseTooLarge, max)
		}
		return nil, err
	}
	if t, err := dec.Token(); err != nil {
		return fail(err)
	} else if d, ok := t.(json.Delim); !ok || d != '[' {
		return fail(errors.New("not a JSON array"))
	}
	out := []OwnedObject{}
	for dec.More() {
		var o OwnedObject
		if err := dec.Decode(&o); err != nil {
			return fail(err)
		}
		out = append(out, o)
	}
	if _, err := dec.Token(); err != nil {
		return fail(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail(errors.New("data after the array"))
	}
	if lr.N <= 0 {
		return fail(nil) // read max+1 bytes: too large
	}
	return out, nil
}

// Obtained lists the objects shared with the caller (GET /access/obtained).
func (c *Client) Obtained(ctx context.Context) ([]ObtainedObject, error) {
	var out []ObtainedObject
	if err := c.getJSON(ctx, "access/obtained", "/access/obtained", &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Version returns the server version string, e.g. "5.26.0 (OpenSSL 3.6.2 …-non-FIPS)".
func (c *Client) Version(ctx context.Context) (string, error) {
	var v string
	if err := c.getJSON(ctx, "version", "/version", &v); err != nil {
		return "", err
	}
	return v, nil
}

// Me returns the identity the server sees this client as (GET /me): with a ckms file, who its
// token or certificate authenticates.
func (c *Client) Me(ctx context.Context) (string, error) {
	var me struct {
		User string `json:"user"`
	}
	if err := c.getJSON(ctx, "me", "/me", &me); err != nil {
		return "", err
	}
	return me.User, nil
}

// Identity is what Check found: the server's release and who the client is to it.
type Identity struct {
	Version string
	User    string
}

// Check proves the client reaches its server and authenticates: the release (/version, no
// authentication needed) and the identity (/me). The error says which of the two failed and
// what to look at in the file that configured the client.
func (c *Client) Check(ctx context.Context) (Identity, error) {
	var id Identity
	v, err := c.Version(ctx)
	if err != nil {
		return id, fmt.Errorf("%s does not answer (check server_url and the network; a TLS error: check verified_cert or accept_invalid_certs): %w", c.where(), err)
	}
	id.Version = v
	u, err := c.Me(ctx)
	if err != nil {
		if errors.Is(err, ErrAccessDenied) {
			return id, fmt.Errorf("%s answers (Cosmian %s) but does not accept this client's credential (check access_token, or the client certificate, and that it is this server's and not another's): %w", c.where(), v, err)
		}
		return id, fmt.Errorf("%s answers (Cosmian %s) but /me failed: %w", c.where(), v, err)
	}
	id.User = u
	return id, nil
}

// Health calls GET /health; nil means the server reports status "UP".
func (c *Client) Health(ctx context.Context) error {
	const op = "health"
	var h struct {
		Status string `json:"status"`
	}
	if err := c.getJSON(ctx, op, "/health", &h); err != nil {
		return err
	}
	if !strings.EqualFold(h.Status, "UP") {
		return &KMSError{Op: op, HTTPStatus: http.StatusOK, Message: "status " + sanitizeMessage([]byte(h.Status)), Kind: ErrServer}
	}
	return nil
}

func (c *Client) getJSON(ctx context.Context, op, path string, v any) error {
	resp, err := c.do(ctx, op, http.MethodGet, path, nil, "")
	if err != nil {
		return err
	}
	if err := json.Unmarshal(resp.body, v); err != nil {
		return fmt.Errorf("cosmian: %s: %w: %w", op, ErrBadResponse, err)
	}
	return nil
}
