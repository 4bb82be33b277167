package sigv4

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// SignerConfig configures a Signer.
type SignerConfig struct {
	Credential Credential
	Region     string           // required
	Service    string           // default "kms-xks-proxy"
	Now        func() time.Time // default time.Now
}

// Signer signs outbound requests with SigV4 (aws-sdk-go-v2's signer). Safe for concurrent use.
type Signer struct {
	creds   aws.Credentials
	region  string
	service string
	now     func() time.Time
	signer  *v4.Signer
}

// NewSigner validates cfg, fills its defaults and returns a Signer.
func NewSigner(cfg SignerConfig) (*Signer, error) {
	if cfg.Service == "" {
		cfg.Service = DefaultService
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Credential.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if !ValidScopePart(cfg.Region) {
		return nil, fmt.Errorf("%w: region must be 1 to 64 characters of a-z 0-9 . - _", ErrConfig)
	}
	if !ValidScopePart(cfg.Service) {
		return nil, fmt.Errorf("%w: service must be 1 to 64 characters of a-z 0-9 . - _", ErrConfig)
	}
	return &Signer{
		creds:   aws.Credentials{AccessKeyID: cfg.Credential.AccessKeyID, SecretAccessKey: cfg.Credential.Secret},
		region:  cfg.Region,
		service: cfg.Service,
		now:     cfg.Now,
		signer:  v4.NewSigner(),
	}, nil
}

// Sign sets X-Amz-Date and Authorization on r for body, signing host and x-amz-date (and
// content-type if set), as AWS KMS does, with the body's hex SHA-256 as payload hash.
//
// The SDK signer signs every header it finds (and content-length), so when r carries headers
// other than Content-Type it is given a shadow request carrying only the headers to sign;
// headers added later by the transport (User-Agent, Accept-Encoding) therefore cannot break
// the signature. r.Host is set to the host that was signed (the SDK drops a default port), so
// the transport sends exactly that.
func (s *Signer) Sign(ctx context.Context, r *http.Request, body []byte) error {
	sum := sha256.Sum256(body)
	return s.SignPayloadHash(ctx, r, &sum)
}

// SignPayloadHash is Sign for a body whose SHA-256 the caller already has (a proxy that
// verified the inbound signature over the same bytes, see Verifier.VerifyPayload).
func (s *Signer) SignPayloadHash(ctx context.Context, r *http.Request, payloadSHA256 *[32]byte) error {
	if r.URL == nil {
		return fmt.Errorf("sigv4: sign: request has no URL")
	}
	if requestHost(r) == "" {
		return fmt.Errorf("sigv4: sign: request has no host")
	}
	var hx [64]byte
	hex.Encode(hx[:], payloadSHA256[:])
	if r.URL.RawQuery == "" && onlySignedHeaders(r.Header) {
		// Fast path (the proxy's own requests): sign r itself, without a shadow copy. The
		// SDK would also sign content-length; AWS KMS does not, so neither do we.
		if r.Header == nil {
			r.Header = make(http.Header, 2)
		}
		cl := r.ContentLength
		r.ContentLength = 0
		err := s.signer.SignHTTP(ctx, s.creds, r, string(hx[:]), s.service, s.region, s.now())
		r.ContentLength = cl
		if err != nil {
			return fmt.Errorf("sigv4: sign: %w", err)
		}
		r.Host = requestHost(r)
		return nil
	}
	u := *r.URL
	shadow := &http.Request{
		Method: r.Method,
		URL:    &u,
		Host:   r.Host,
		Header: make(http.Header, 3),
	}
	if ct := r.Header.Values("Content-Type"); len(ct) > 0 {
		shadow.Header["Content-Type"] = ct
	}
	if err := s.signer.SignHTTP(ctx, s.creds, shadow, string(hx[:]), s.service, s.region, s.now()); err != nil {
		return fmt.Errorf("sigv4: sign: %w", err)
	}
	if r.Header == nil {
		r.Header = make(http.Header, 3)
	}
	r.Header["X-Amz-Date"] = shadow.Header["X-Amz-Date"]
	r.Header["Authorization"] = shadow.Header["Authorization"]
	r.Host = requestHost(shadow)
	return nil
}

// onlySignedHeaders reports whether h holds nothing but the headers Sign signs or replaces
// (canonical keys only: the SDK would sign any other key, whatever its spelling).
func onlySignedHeaders(h http.Header) bool {
	for k := range h {
		switch k {
		case "Content-Type", "X-Amz-Date", "Authorization":
		default:
			return false
		}
	}
	return true
}
