// Package peerauth authenticates calls between the members of one fleet. A member that does
// not drive the migration forwards an operator's admin call to the driver without the
// operator's bearer token: it signs the call with the fleet secret every member holds
// (HMAC-SHA256 over the method, the request URI, the body's hash, the time, a random nonce,
// the forwarding member and the member it is addressed to). The driver accepts a call only with
// a valid signature, a time within Skew of its own clock and a nonce it has not seen in that
// window, and signs its reply (the responder, the request's nonce, the status, the content type
// and the body's hash) so that the forwarder relays nothing that did not come from a member.
//
// Whoever can write the fleet's etcd prefix can advertise any address for the driver: what
// reaches that address is one signed call, good once, for that member, for Skew. It carries no
// credential usable for anything else, and a reply not signed with the fleet secret is refused.
package peerauth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/fleet"
)

// Headers of a signed call and of its signed reply.
const (
	HeaderFrom      = "X-Xksproxy-Fleet-From"      // the forwarding member
	HeaderTo        = "X-Xksproxy-Fleet-To"        // the member the call is addressed to
	HeaderTime      = "X-Xksproxy-Fleet-Time"      // Unix seconds
	HeaderNonce     = "X-Xksproxy-Fleet-Nonce"     // 32 hex digits, fresh for each call
	HeaderSignature = "X-Xksproxy-Fleet-Signature" // 64 hex digits (request and reply)
)

// Defaults and bounds.
const (
	DefaultSkew      = 30 * time.Second
	DefaultMaxNonces = 4096
	// MinSecretBytes is the shortest fleet secret accepted (after base64 decoding).
	MinSecretBytes = 32
	maxSecretBytes = 1024
	nonceBytes     = 16
)

// Errors of Verify: the reason the driver logs. None carries a secret or a signature.
var (
	ErrUnsigned     = errors.New("peerauth: not a signed fleet call (signature headers missing)")
	ErrMalformed    = errors.New("peerauth: malformed signature headers")
	ErrStale        = errors.New("peerauth: time outside the accepted skew (clocks apart, or a delayed or replayed call)")
	ErrBadSignature = errors.New("peerauth: signature does not verify (a different fleet secret, or an altered call)")
	ErrReplayed     = errors.New("peerauth: nonce already seen (a replayed call)")
	ErrMisdirected  = errors.New("peerauth: call addressed to another member")
	ErrBusy         = errors.New("peerauth: too many signed calls in the skew window")
	ErrBadReply     = errors.New("peerauth: reply not signed by the member the call was addressed to")
)

// Config configures one member's signer and verifier.
type Config struct {
	// Secret is the fleet secret, the same on every member: at least MinSecretBytes random
	// bytes (ParseSecret decodes the configured text).
	Secret []byte
	// Member is this member's name: the From of the calls it signs, the To of those it accepts.
	Member string
	// Skew bounds how far a call's time may be from this member's clock (default 30s); a nonce
	// is remembered for as long as its call's time is within it.
	Skew time.Duration
	// MaxNonces bounds the replay cache (default 4096): with that many calls inside the
	// window, further ones are refused (ErrBusy) rather than forgetting a nonce early.
	MaxNonces int
	Now       func() time.Time
}

// Auth signs and verifies fleet calls.
type Auth struct {
	secret []byte
	member string
	skew   time.Duration
	max    int
	now    func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time // nonce → when its call leaves the window
}

// New validates cfg (it keeps its own copy of the secret).
func New(cfg Config) (*Auth, error) {
	if len(cfg.Secret) < MinSecretBytes {
		return nil, fmt.Errorf("peerauth: a fleet secret of at least %d bytes is required, got %d", MinSecretBytes, len(cfg.Secret))
	}
	if err := checkMember(cfg.Member); err != nil {
		return nil, err
	}
	if cfg.Skew < 0 || cfg.MaxNonces < 0 {
		return nil, errors.New("peerauth: negative skew or replay cache size")
	}
	if cfg.Skew == 0 {
		cfg.Skew = DefaultSkew
	}
	if cfg.MaxNonces == 0 {
		cfg.MaxNonces = DefaultMaxNonces
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Auth{secret: append([]byte(nil), cfg.Secret...), member: cfg.Member, skew: cfg.Skew,
		max: cfg.MaxNonces, now: cfg.Now, seen: map[string]time.Time{}}, nil
}

// ParseSecret decodes a configured fleet secret: standard base64 (padded or not) of at least
// MinSecretBytes bytes, e.g. the output of `openssl rand -base64 32`. The error never quotes s.
func ParseSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) > base64.StdEncoding.EncodedLen(maxSecretBytes) {
		return nil, fmt.Errorf("longer than %d bytes", maxSecretBytes)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, errors.New("not base64 (generate it with: openssl rand -base64 32)")
	}
	if len(b) < MinSecretBytes {
		clear(b)
		return nil, fmt.Errorf("%d bytes once decoded, at least %d random bytes are required (openssl rand -base64 32)", len(b), MinSecretBytes)
	}
	return b, nil
}

// Call is one signed call on the forwarder's side: what its reply must be signed with.
type Call struct {
	to, nonce string
}

// Sign signs req, addressed to member to, with body (req's body, already read): it sets the
// signature headers and removes any Authorization header, which never travels between members.
func (a *Auth) Sign(req *http.Request, to string, body []byte) (*Call, error) {
	if err := checkMember(to); err != nil {
		return nil, err
	}
	var n [nonceBytes]byte
	if _, err := rand.Read(n[:]); err != nil {
		return nil, fmt.Errorf("peerauth: nonce: %w", err)
	}
	nonce := hex.EncodeToString(n[:])
	ts := strconv.FormatInt(a.now().Unix(), 10)
	bh := sha256.Sum256(body)
	mac := a.requestMAC(req.Method, req.URL.RequestURI(), a.member, to, ts, nonce, bh[:])
	req.Header.Del("Authorization")
	req.Header.Set(HeaderFrom, a.member)
	req.Header.Set(HeaderTo, to)
	req.Header.Set(HeaderTime, ts)
	req.Header.Set(HeaderNonce, nonce)
	req.Header.Set(HeaderSignature, hex.EncodeToString(mac))
	return &Call{to: to, nonce: nonce}, nil
}

// VerifyReply checks that a reply to c (status, content type, body, and the signature header
// value) was signed by the member c was addressed to.
func (a *Auth) VerifyReply(c *Call, status int, contentType string, body []byte, signature string) error {
	got, err := decodeMAC(signature)
	if err != nil {
		return ErrBadReply
	}
	bh := sha256.Sum256(body)
	if !hmac.Equal(got, a.replyMAC(c.to, c.nonce, status, contentType, bh[:])) {
		return ErrBadReply
	}
	return nil
}

// Peer is a verified call on the driver's side.
type Peer struct {
	// Member is the member that signed the call.
	Member string
	nonce  string
}

// Verify checks a call addressed to this member: headers, time, signature, then the nonce
// (remembered only once the signature verified, so that unsigned traffic cannot fill the
// cache). body is the request's body, already read within the caller's bound.
func (a *Auth) Verify(r *http.Request, body []byte) (*Peer, error) {
	from, to, ts, nonce, sig := r.Header.Get(HeaderFrom), r.Header.Get(HeaderTo), r.Header.Get(HeaderTime),
		r.Header.Get(HeaderNonce), r.Header.Get(HeaderSignature)
	if from == "" && to == "" && ts == "" && nonce == "" && sig == "" {
		return nil, ErrUnsigned
	}
	if checkMember(from) != nil || checkMember(to) != nil || len(ts) > 20 || len(nonce) != 2*nonceBytes {
		return nil, ErrMalformed
	}
	if _, err := hex.DecodeString(nonce); err != nil {
		return nil, ErrMalformed
	}
	got, err := decodeMAC(sig)
	if err != nil {
		return nil, ErrMalformed
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return nil, ErrMalformed
	}
	now := a.now()
	t := time.Unix(sec, 0)
	if t.Before(now.Add(-a.skew)) || t.After(now.Add(a.skew)) {
		return nil, ErrStale
	}
	bh := sha256.Sum256(body)
	if !hmac.Equal(got, a.requestMAC(r.Method, r.URL.RequestURI(), from, to, ts, nonce, bh[:])) {
		return nil, ErrBadSignature
	}
	if to != a.member {
		return nil, ErrMisdirected
	}
	if err := a.remember(nonce, t.Add(a.skew), now); err != nil {
		return nil, err
	}
	return &Peer{Member: from, nonce: nonce}, nil
}

// SignReply returns the signature header value of the reply to p.
func (a *Auth) SignReply(p *Peer, status int, contentType string, body []byte) string {
	bh := sha256.Sum256(body)
	return hex.EncodeToString(a.replyMAC(a.member, p.nonce, status, contentType, bh[:]))
}

// remember records nonce until until; a nonce already there is a replay. Entries whose call
// left the window are dropped first (the time check refuses those calls anyway).
func (a *Auth) remember(nonce string, until, now time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if exp, ok := a.seen[nonce]; ok && !now.After(exp) {
		return ErrReplayed
	}
	if len(a.seen) >= a.max {
		for n, exp := range a.seen {
			if now.After(exp) {
				delete(a.seen, n)
			}
		}
		if len(a.seen) >= a.max {
			return ErrBusy
		}
	}
	a.seen[nonce] = until
	return nil
}

// Domain labels keep a request's MAC from ever verifying as a reply's, and the other way.
const (
	requestLabel = "xksproxy-fleet-request-v1"
	replyLabel   = "xksproxy-fleet-reply-v1"
)

func (a *Auth) requestMAC(method, uri, from, to, ts, nonce string, bodyHash []byte) []byte {
	m := hmac.New(sha256.New, a.secret)
	field(m, requestLabel)
	for _, s := range []string{method, uri, from, to, ts, nonce} {
		field(m, s)
	}
	field(m, string(bodyHash))
	return m.Sum(nil)
}

func (a *Auth) replyMAC(responder, nonce string, status int, contentType string, bodyHash []byte) []byte {
	m := hmac.New(sha256.New, a.secret)
	for _, s := range []string{replyLabel, responder, nonce, strconv.Itoa(status), contentType, string(bodyHash)} {
		field(m, s)
	}
	return m.Sum(nil)
}

// field writes s length-prefixed, so that no two field lists encode alike.
func field(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

func decodeMAC(s string) ([]byte, error) {
	if len(s) != 2*sha256.Size {
		return nil, ErrMalformed
	}
	return hex.DecodeString(s)
}

// checkMember is the fleet's rule for member names (they travel in headers).
func checkMember(s string) error {
	if err := fleet.ValidMemberName(s); err != nil {
		return fmt.Errorf("%w: member: %w", ErrMalformed, err)
	}
	return nil
}
