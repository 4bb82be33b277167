package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// DefaultService is the SigV4 service name of the XKS proxy API.
	DefaultService = "kms-xks-proxy"
	// DefaultMaxSkew is the clock skew the XKS spec allows.
	DefaultMaxSkew = 5 * time.Minute
	// MaxCredentials bounds the credential sets of one Verifier.
	MaxCredentials = 16

	amzDateLayout = "20060102T150405Z"
	// maxPooledBuf stops an unusually large request from pinning a large pooled buffer.
	maxPooledBuf = 64 << 10
)

// ErrConfig is wrapped by every NewVerifier, SetCredentials and NewSigner configuration error.
var ErrConfig = errors.New("sigv4: invalid configuration")

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	Region      string           // required: the credential scope region that must match
	Service     string           // default "kms-xks-proxy"
	MaxSkew     time.Duration    // default 5 * time.Minute
	Now         func() time.Time // default time.Now (injected clock)
	Credentials []Credential     // at least 1, at most 16, distinct access key ids
}

// Verifier checks SigV4 header-signed requests. It is safe for concurrent use.
type Verifier struct {
	region, service string
	maxSkew         time.Duration
	now             func() time.Time
	creds           atomic.Pointer[credSet]
	scratch         sync.Pool // *scratch
	// skipCredentialValidation lets the AWS suite's 11-character AKIDEXAMPLE in (tests only).
	skipCredentialValidation bool
	errWrongRegion           fixedErr
	errWrongService          fixedErr
}

type credSet struct {
	byID map[string]*credEntry
	ids  []string // configuration order
}

type scratch struct {
	buf     []byte
	payload [64]byte
	mac     [32]byte
}

// NewVerifier validates cfg, fills its defaults and returns a Verifier.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	return newVerifier(cfg, false)
}

func newVerifier(cfg VerifierConfig, skipCredentialValidation bool) (*Verifier, error) {
	if cfg.Service == "" {
		cfg.Service = DefaultService
	}
	if cfg.MaxSkew == 0 {
		cfg.MaxSkew = DefaultMaxSkew
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if !ValidScopePart(cfg.Region) {
		return nil, fmt.Errorf("%w: region must be 1 to 64 characters of a-z 0-9 . - _", ErrConfig)
	}
	if !ValidScopePart(cfg.Service) {
		return nil, fmt.Errorf("%w: service must be 1 to 64 characters of a-z 0-9 . - _", ErrConfig)
	}
	if cfg.MaxSkew < 0 || cfg.MaxSkew > 24*time.Hour {
		return nil, fmt.Errorf("%w: max skew must be between 0 and 24h", ErrConfig)
	}
	v := &Verifier{
		region:                   cfg.Region,
		service:                  cfg.Service,
		maxSkew:                  cfg.MaxSkew,
		now:                      cfg.Now,
		skipCredentialValidation: skipCredentialValidation,
		errWrongRegion:           fixedErr{ReasonWrongRegion, "credential scope region must be " + cfg.Region},
		errWrongService:          fixedErr{ReasonWrongService, "credential scope service must be " + cfg.Service},
	}
	v.scratch.New = func() any { return &scratch{buf: make([]byte, 0, 2048)} }
	if err := v.SetCredentials(cfg.Credentials); err != nil {
		return nil, err
	}
	return v, nil
}

// SetCredentials atomically replaces the credential sets (SIGHUP rotation) without blocking
// in-flight Verify calls. The validation is NewVerifier's. A credential kept unchanged keeps
// its cached signing keys.
func (v *Verifier) SetCredentials(creds []Credential) error {
	if len(creds) == 0 || len(creds) > MaxCredentials {
		return fmt.Errorf("%w: need 1 to %d credentials, got %d", ErrConfig, MaxCredentials, len(creds))
	}
	old := v.creds.Load()
	set := &credSet{byID: make(map[string]*credEntry, len(creds)), ids: make([]string, 0, len(creds))}
	for i, c := range creds {
		if !v.skipCredentialValidation {
			if err := c.Validate(); err != nil {
				return fmt.Errorf("%w: credential %d: %w", ErrConfig, i, err)
			}
		}
		if _, dup := set.byID[c.AccessKeyID]; dup {
			return fmt.Errorf("%w: access key id %s is listed twice", ErrConfig, c.AccessKeyID)
		}
		e := &credEntry{cred: c}
		if old != nil {
			if prev := old.byID[c.AccessKeyID]; prev != nil && prev.cred.Secret == c.Secret {
				e = prev
			}
		}
		set.byID[c.AccessKeyID] = e
		set.ids = append(set.ids, c.AccessKeyID)
	}
	v.creds.Store(set)
	return nil
}

// AccessKeyIDs returns the configured access key ids, in configuration order.
func (v *Verifier) AccessKeyIDs() []string {
	return append([]string(nil), v.creds.Load().ids...)
}

// Verify checks the request's AWS4-HMAC-SHA256 Authorization header against the credential
// sets. body is the whole request body, already read and size-bounded by the caller. The host
// comes from r.Host. It returns the access key id that matched; every failure is an *AuthError.
func (v *Verifier) Verify(r *http.Request, body []byte) (accessKeyID string, err error) {
	var sum [32]byte
	return v.VerifyPayload(r, body, &sum)
}

// VerifyPayload is Verify that also stores the body's SHA-256 in *payloadSHA256 when the
// signature is valid, so that a proxy forwarding the body unchanged can re-sign it
// (Signer.SignPayloadHash) without hashing it again.
func (v *Verifier) VerifyPayload(r *http.Request, body []byte, payloadSHA256 *[32]byte) (accessKeyID string, err error) {
	id, e := v.verify(r, body, payloadSHA256)
	if e != nil {
		return "", e
	}
	return id, nil
}

func (v *Verifier) verify(r *http.Request, body []byte, sum *[32]byte) (string, *AuthError) {
	vals := r.Header["Authorization"]
	switch {
	case len(vals) == 0:
		return "", errMissingAuth.err()
	case len(vals) > 1:
		return "", errMultipleAuth.err()
	}
	a, e := parseAuthorization(vals[0])
	if e != nil {
		return "", e
	}
	if a.Service != v.service {
		return "", v.errWrongService.err()
	}
	if a.Region != v.region {
		return "", v.errWrongRegion.err()
	}
	entry := v.creds.Load().byID[a.AccessKeyID]
	if entry == nil {
		return "", authErr(ReasonUnknownAccessKey, "unknown access key id "+a.AccessKeyID)
	}

	dates := lookupHeader(r.Header, "x-amz-date")
	if len(dates) == 0 {
		return "", errMissingDate.err()
	}
	if len(dates) > 1 {
		return "", errBadDate.err()
	}
	amzDate := dates[0]
	t, ok := parseAmzDate(amzDate)
	if !ok {
		return "", errBadDate.err()
	}
	if amzDate[:8] != a.Date {
		return "", errDateScope.err()
	}
	if d := v.now().Sub(t); d > v.maxSkew || d < -v.maxSkew {
		return "", errClockSkew.err()
	}
	day, _ := parseDay(a.Date) // validated by parseAuthorization

	sc := v.scratch.Get().(*scratch)
	defer func() {
		if cap(sc.buf) <= maxPooledBuf {
			v.scratch.Put(sc)
		}
	}()
	*sum = sha256.Sum256(body)
	hex.Encode(sc.payload[:], sum[:])
	cr, e := appendCanonicalRequest(sc.buf[:0], r, &a, sc.payload[:])
	sc.buf = cr
	if e != nil {
		return "", e
	}
	// The string to sign goes after the canonical request in the same buffer.
	sc.buf = appendStringToSign(sc.buf, amzDate, a.Scope, cr)
	sts := sc.buf[len(cr):]
	entry.slot(day, a.Date, v.region, v.service).sign(&sc.mac, sts)
	if !hmac.Equal(sc.mac[:], a.Signature[:]) {
		return "", errBadSignature.err()
	}
	return entry.cred.AccessKeyID, nil
}

// parseAmzDate parses yyyymmddThhmmssZ without allocating.
func parseAmzDate(s string) (time.Time, bool) {
	if len(s) != len(amzDateLayout) || s[8] != 'T' || s[15] != 'Z' {
		return time.Time{}, false
	}
	day, ok := parseDay(s[:8])
	if !ok {
		return time.Time{}, false
	}
	var hms [3]int
	for i := range hms {
		hi, lo := s[9+2*i], s[10+2*i]
		if hi < '0' || hi > '9' || lo < '0' || lo > '9' {
			return time.Time{}, false
		}
		hms[i] = int(hi-'0')*10 + int(lo-'0')
	}
	if hms[0] > 23 || hms[1] > 59 || hms[2] > 59 {
		return time.Time{}, false
	}
	return time.Date(int(day/10000), time.Month(day/100%100), int(day%100), hms[0], hms[1], hms[2], 0, time.UTC), true
}
