// Package cosmian talks to Cosmian KMS servers: a KMIP 2.1 client over the JSON TTLV REST
// endpoint (POST /kmip/2_1), the access-rights REST API (/access/*), /version and /health, and
// a reader for ckms client configuration files (the files `ckms -c server_a.toml` takes), so that
// the proxy reaches a server exactly as the operator's ckms does.
//
// Key material and plaintext pass through this package only in memory: request buffers that
// carry them are wiped once sent, response buffers and decoded TTLV trees once decoded, and no
// error message ever contains a request body or key bytes.
package cosmian

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Defaults for ClientConfig.
const (
	DefaultTimeout          = 10 * time.Second
	DefaultMaxResponseBytes = 16 << 20
	DefaultVendorID         = "cosmian"
	// A listing (GET /access/owned) comes in one body of about 500 bytes an object, so its
	// bounds are its own: 256 MiB is some 500 000 objects, read in at most two minutes.
	DefaultListTimeout  = 2 * time.Minute
	DefaultMaxListBytes = 256 << 20
)

// ClientConfig configures a Client. Build one by hand or with CKMSConfig.ClientConfig.
type ClientConfig struct {
	// BaseURL is the server origin, e.g. "https://kms-a:9998" (a trailing "/" is stripped).
	BaseURL string
	// HTTP is the client used for every call (its Transport carries TLS and the pool).
	HTTP *http.Client
	// Header is added to every request (Authorization: Bearer …, X-Vault-Token, custom headers).
	Header http.Header
	// Timeout bounds each call (context.WithTimeout); default 10 s.
	Timeout time.Duration
	// MaxResponseBytes bounds a reply body; larger replies are an error. Default 16 MiB.
	MaxResponseBytes int64
	// ListTimeout and MaxListBytes bound a listing of every owned object instead (defaults
	// 2 minutes and 256 MiB); it is decoded as it arrives, keeping only ids and states.
	ListTimeout  time.Duration
	MaxListBytes int64
	// VendorID is the vendor identification of the tag attribute; default "cosmian". It must
	// match the server's vendor_identification.
	VendorID string
	// Source names where these settings come from (the ckms client file), so that every error
	// of the client says which file to fix ("" for a client built by hand).
	Source string
}

// CheckAndSetDefaults validates the configuration and fills in defaults.
func (c *ClientConfig) CheckAndSetDefaults() error {
	base := strings.TrimRight(c.BaseURL, "/")
	if base == "" {
		return errors.New("cosmian: ClientConfig.BaseURL is required")
	}
	u, err := url.Parse(base)
	if err != nil {
		return fmt.Errorf("cosmian: ClientConfig.BaseURL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("cosmian: ClientConfig.BaseURL: scheme must be http or https, not %q", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("cosmian: ClientConfig.BaseURL: no host")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return errors.New("cosmian: ClientConfig.BaseURL: must not carry a query, fragment or user info")
	}
	c.BaseURL = base
	if c.HTTP == nil {
		return errors.New("cosmian: ClientConfig.HTTP is required")
	}
	if c.Timeout < 0 {
		return errors.New("cosmian: ClientConfig.Timeout is negative")
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxResponseBytes < 0 {
		return errors.New("cosmian: ClientConfig.MaxResponseBytes is negative")
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if c.ListTimeout < 0 || c.MaxListBytes < 0 {
		return errors.New("cosmian: ClientConfig.ListTimeout and MaxListBytes must not be negative")
	}
	if c.ListTimeout == 0 {
		c.ListTimeout = DefaultListTimeout
	}
	if c.MaxListBytes == 0 {
		c.MaxListBytes = DefaultMaxListBytes
	}
	if c.VendorID == "" {
		c.VendorID = DefaultVendorID
	}
	return nil
}

// Client is a Cosmian KMS client. It is safe for concurrent use.
type Client struct {
	cfg    ClientConfig
	header http.Header
}

// NewClient validates cfg and returns a client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, header: cfg.Header.Clone()}, nil
}

// BaseURL returns the server origin the client talks to (without trailing "/").
func (c *Client) BaseURL() string { return c.cfg.BaseURL }

// ErrResponseTooLarge is wrapped when a reply exceeds ClientConfig.MaxResponseBytes.
var ErrResponseTooLarge = errors.New("cosmian: response too large")

// secretBuf is a request body that may hold key material or plaintext. Readers share it; wipe
// zeroes it and makes every later Read fail, so a transport still holding a reader after Do
// returns cannot resurrect the bytes.
type secretBuf struct {
	mu    sync.Mutex
	b     []byte
	wiped bool
}

func (s *secretBuf) wipe() {
	s.mu.Lock()
	clear(s.b)
	s.wiped = true
	s.mu.Unlock()
}

type secretReader struct {
	s   *secretBuf
	off int
}

var errBodyWiped = errors.New("cosmian: request body already wiped")

func (r *secretReader) Read(p []byte) (int, error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.s.wiped {
		return 0, errBodyWiped
	}
	if r.off >= len(r.s.b) {
		return 0, io.EOF
	}
	n := copy(p, r.s.b[r.off:])
	r.off += n
	return n, nil
}

func (r *secretReader) Close() error { return nil }

// response is a reply whose body the caller owns (and wipes when it may hold secrets).
type response struct {
	status      int
	contentType string
	body        []byte
}

// do sends one request. body (may be nil) is wiped before do returns. op names the operation in
// errors. A non-2xx reply becomes a *KMSError.
func (c *Client) do(ctx context.Context, op, method, path string, body []byte, contentType string) (*response, error) {
	var r *response
	err := c.exchange(ctx, c.cfg.Timeout, op, method, path, body, contentType, func(resp *http.Response) error {
		data, err := c.readReply(op, resp)
		if err != nil {
			return err
		}
		r = &response{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: data}
		return nil
	})
	return r, err
}

// exchange sends one request within timeout and hands a 2xx reply to read, whose body it closes
// after. body (may be nil) is wiped before exchange returns. A non-2xx reply (read within
// MaxResponseBytes) becomes a *KMSError.
func (c *Client) exchange(ctx context.Context, timeout time.Duration, op, method, path string, body []byte, contentType string,
	read func(*http.Response) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var sb *secretBuf
	var rd io.Reader
	if body != nil {
		sb = &secretBuf{b: body}
		defer sb.wipe()
		rd = &secretReader{s: sb}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.cfg.BaseURL+path, rd)
	if err != nil {
		return fmt.Errorf("cosmian: %s: building request: %w", op, err)
	}
	if sb != nil {
		req.ContentLength = int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return &secretReader{s: sb}, nil }
	}
	for k, vs := range c.header {
		req.Header[k] = vs // as spelled by the configuration (see headerSet)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")

	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("cosmian: %s %s%s: %w", op, c.cfg.BaseURL, c.from(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, err := c.readReply(op, resp)
		if err != nil {
			return err
		}
		e := newKMSError(op, resp.StatusCode, data)
		e.Where = c.where()
		clear(data)
		return e
	}
	return read(resp)
}

// readReply reads resp's body within MaxResponseBytes; on failure nothing read is kept.
func (c *Client) readReply(op string, resp *http.Response) ([]byte, error) {
	data, err := readBounded(resp.Body, c.cfg.MaxResponseBytes, resp.ContentLength)
	if err != nil {
		clear(data)
		return nil, fmt.Errorf("cosmian: %s %s%s: reading reply (HTTP %d): %w", op, c.cfg.BaseURL, c.from(), resp.StatusCode, err)
	}
	return data, nil
}

// where names the server and, when known, the file that configured this client.
func (c *Client) where() string {
	if c.cfg.Source == "" {
		return c.cfg.BaseURL
	}
	return c.cfg.Source + ", server_url " + c.cfg.BaseURL
}

func (c *Client) from() string {
	if c.cfg.Source == "" {
		return ""
	}
	return " (" + c.cfg.Source + ")"
}

// readBounded reads at most max bytes; more is ErrResponseTooLarge. It grows its buffer by hand
// and zeroes every buffer it outgrows, so no stale copy of a key-bearing body is left behind.
func readBounded(r io.Reader, max, hint int64) ([]byte, error) {
	size := int64(4096)
	if hint > 0 {
		size = hint + 1 // +1 so that a correct Content-Length needs no regrowth to see EOF
	}
	if size > max+1 {
		size = max + 1
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > max {
				return buf, fmt.Errorf("%w (limit %d bytes)", ErrResponseTooLarge, max)
			}
			n := int64(cap(buf)) * 2
			if n > max+1 {
				n = max + 1
			}
			nb := make([]byte, len(buf), n)
			copy(nb, buf)
			clear(buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > max {
			return buf, fmt.Errorf("%w (limit %d bytes)", ErrResponseTooLarge, max)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
