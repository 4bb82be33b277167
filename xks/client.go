package xks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// RequestSigner signs an outbound XKS request (SigV4 for kms-xks-proxy); body is the exact body.
type RequestSigner interface {
	Sign(ctx context.Context, r *http.Request, body []byte) error
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// BaseURL is the XKS base, e.g. "https://host:8443/aws/kms/xks/v1"; its path must end with
	// /kms/xks/v1 and carry a valid prefix.
	BaseURL string
	// HTTP is the client to use; default: a new client on a clone of http.DefaultTransport.
	HTTP *http.Client
	// Signer signs each request; nil sends unsigned requests (tests).
	Signer RequestSigner
	// Timeout bounds each call (connection, request and reading the reply); default 5s.
	Timeout time.Duration
	// Header holds extra headers for every request (optional).
	Header http.Header
}

// DefaultClientTimeout is the per-call timeout when ClientConfig.Timeout is zero.
const DefaultClientTimeout = 5 * time.Second

// maxReply bounds a reply body read by the client; XKS replies are a few KB.
const maxReply = 1 << 20

// Client calls an XKS endpoint. It is safe for concurrent use.
type Client struct {
	base    string
	http    *http.Client
	signer  RequestSigner
	timeout time.Duration
	header  http.Header
}

// NewClient checks cfg, fills defaults and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("xks: client base URL: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("xks: client base URL %q: scheme must be https or http", cfg.BaseURL)
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("xks: client base URL %q: want scheme://host[:port][/prefix]/kms/xks/v1", cfg.BaseURL)
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	if !strings.HasSuffix(path, APIPathSuffix) {
		return nil, fmt.Errorf("xks: client base URL %q: path must end with %s", cfg.BaseURL, APIPathSuffix)
	}
	if err := ValidPrefix(strings.TrimSuffix(path, APIPathSuffix)); err != nil {
		return nil, fmt.Errorf("xks: client base URL %q: %w", cfg.BaseURL, err)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("xks: client timeout %v is negative", cfg.Timeout)
	}
	c := &Client{
		base:    u.Scheme + "://" + u.Host + path,
		http:    cfg.HTTP,
		signer:  cfg.Signer,
		timeout: cfg.Timeout,
		header:  cfg.Header.Clone(),
	}
	if c.timeout == 0 {
		c.timeout = DefaultClientTimeout
	}
	if c.http == nil {
		c.http = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	return c, nil
}

// URL returns the URL of op for keyID (ignored for OpHealth).
func (c *Client) URL(op Operation, keyID string) (string, error) {
	switch op {
	case OpHealth:
		return c.base + "/health", nil
	case OpMetadata, OpEncrypt, OpDecrypt:
		if err := ValidKeyID(keyID); err != nil {
			return "", err
		}
		return c.base + "/keys/" + keyID + "/" + op.pathSegment(), nil
	}
	return "", fmt.Errorf("xks: unknown operation %d", op)
}

// Do POSTs body to op's URI and returns the raw reply (for load generators and tests). err is
// non-nil only when no reply was received (bad key id, signing, network, timeout, oversized
// reply); a timeout satisfies errors.Is(err, context.DeadlineExceeded).
func (c *Client) Do(ctx context.Context, op Operation, keyID string, body []byte) (status int, respBody []byte, err error) {
	u, err := c.URL(op, keyID)
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("xks: %s: %w", op, err)
	}
	for k, vs := range c.header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	if c.signer != nil {
		if err := c.signer.Sign(ctx, req, body); err != nil {
			return 0, nil, fmt.Errorf("xks: signing %s request: %w", op, err)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, transportError(ctx, op, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	if err != nil {
		return 0, nil, transportError(ctx, op, err)
	}
	if len(b) > maxReply {
		return 0, nil, fmt.Errorf("xks: %s: reply larger than %d bytes", op, maxReply)
	}
	return resp.StatusCode, b, nil
}

// transportError wraps err so that a timeout of ctx is visible to errors.Is.
func transportError(ctx context.Context, op Operation, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("xks: %s: %w: %w", op, cerr, err)
	}
	return fmt.Errorf("xks: %s: %w", op, err)
}

// call sends a typed request and decodes a checked reply into out.
func (c *Client) call(ctx context.Context, op Operation, keyID string, in any, v Validated, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("xks: encoding %s request: %w", op, err)
	}
	status, resp, err := c.Do(ctx, op, keyID, body)
	clear(body) // may hold plaintext
	if err != nil {
		return err
	}
	defer clear(resp)
	if status < 200 || status > 299 {
		return replyError(status, resp)
	}
	norm, e := normalizeSuccess(nil, op, resp, v)
	defer clear(norm)
	if e != nil {
		e.HTTPStatus = status
		return e
	}
	if err := json.Unmarshal(norm, out); err != nil {
		return Errorf(InternalException, "decoding %s reply: %w", op, err)
	}
	return nil
}

// Health calls GetHealthStatus. md needs KMSRequestID and KMSOperation (e.g. "KmsHealthCheck").
// An XKS error reply is an *Error with the backend's errorName and HTTPStatus.
func (c *Client) Health(ctx context.Context, md RequestMetadata) (*HealthResponse, error) {
	var out HealthResponse
	if err := c.call(ctx, OpHealth, "", HealthRequest{RequestMetadata: md}, Validated{Op: OpHealth}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Metadata calls GetKeyMetadata for keyID.
func (c *Client) Metadata(ctx context.Context, keyID string, md RequestMetadata) (*MetadataResponse, error) {
	var out MetadataResponse
	if err := c.call(ctx, OpMetadata, keyID, MetadataRequest{RequestMetadata: md}, Validated{Op: OpMetadata}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Encrypt calls Encrypt for keyID; an empty EncryptionAlgorithm is sent as AES_GCM. The reply is
// checked (ciphertext as long as the plaintext, IV 12/16, tag 16, CDIV present if asked for).
func (c *Client) Encrypt(ctx context.Context, keyID string, req *EncryptRequest) (*EncryptResponse, error) {
	r := *req
	if r.EncryptionAlgorithm == "" {
		r.EncryptionAlgorithm = AlgorithmAESGCM
	}
	v := Validated{Op: OpEncrypt, PayloadLen: len(r.Plaintext), WantCDIV: r.CiphertextDataIntegrityValueAlgorithm != ""}
	var out EncryptResponse
	if err := c.call(ctx, OpEncrypt, keyID, &r, v, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Decrypt calls Decrypt for keyID; an empty EncryptionAlgorithm is sent as AES_GCM. The
// plaintext must be as long as the ciphertext. The caller owns (and should clear) Plaintext.
func (c *Client) Decrypt(ctx context.Context, keyID string, req *DecryptRequest) (*DecryptResponse, error) {
	r := *req
	if r.EncryptionAlgorithm == "" {
		r.EncryptionAlgorithm = AlgorithmAESGCM
	}
	v := Validated{Op: OpDecrypt, PayloadLen: len(r.Ciphertext)}
	var out DecryptResponse
	if err := c.call(ctx, OpDecrypt, keyID, &r, v, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
