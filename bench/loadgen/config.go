package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("loadgen: invalid config")

// Mix is the share of each kind of request. Weights are relative (they need not sum to 1).
type Mix struct {
	Encrypt   float64 `json:"encrypt"`
	Decrypt   float64 `json:"decrypt"`
	Metadata  float64 `json:"metadata"`   // GetKeyMetadata of an existing key
	CreateKey float64 `json:"create_key"` // GetKeyMetadata of a new key id (needs CreateKeyPrefix)
}

// DefaultMix returns the mix used when Config.Mix is all zero.
func DefaultMix() Mix { return Mix{Encrypt: 0.45, Decrypt: 0.45, Metadata: 0.09, CreateKey: 0.01} }

// SizeWeight is one plaintext size (bytes) and its relative weight.
type SizeWeight struct {
	Size   int     `json:"size"`
	Weight float64 `json:"weight"`
}

// DefaultSizes: mostly 32-byte data keys (GenerateDataKey), 5% 4300-byte KMS Encrypt payloads.
func DefaultSizes() []SizeWeight { return []SizeWeight{{32, 0.95}, {4300, 0.05}} }

// Defaults.
const (
	DefaultConns      = 16
	DefaultWorkers    = 32
	DefaultTimeout    = 250 * time.Millisecond
	DefaultPrincipal  = "arn:aws:iam::111122223333:role/xksload"
	DefaultMaxSamples = 10_000_000
	// ringSize bounds the recent encrypt results kept per key for Decrypt traffic, and
	// ringBudget all keys' together: a soak's CreateKey share adds thousands of keys, and 128
	// results for each (1.2 GB at 12 700 keys) made the load generator's GC stall the emulators
	// it shares a process with.
	ringSize   = 128
	ringBudget = 16 << 10
	ringMin    = 4
	// maxPlaintext bounds Sizes (the spec minimum the proxy must support is 4300).
	maxPlaintext = 64 << 10
)

// Config configures a Runner or HealthPoller. New fills the defaults described on each field.
type Config struct {
	Endpoint string // "https://host:port"
	// Endpoints are more replicas behind the same load balancer: requests go round-robin over
	// Endpoint and these, and one refused by a replica that is down goes to the next.
	Endpoints  []string
	Prefix     string           // URI prefix before /kms/xks/v1, e.g. "/aws"
	Region     string           // SigV4 region
	Credential sigv4.Credential // SigV4 credential
	Service    string           // SigV4 service, default kms-xks-proxy
	TLS        *tls.Config      // nil → system roots
	Conns      int              // keep-alive connections (MaxConnsPerHost), default 16
	HTTP2      bool             // default false: HTTP/1.1 keep-alive
	Keys       []string         // external key ids
	Mix        Mix              // default DefaultMix()
	Sizes      []SizeWeight     // default DefaultSizes()
	// NoAAD turns off AAD on Encrypt (the brief's "AAD default true": a bool's zero value must
	// mean the default, so the switch is inverted). With AAD, 0..64 random bytes are sent.
	NoAAD bool
	// CDIV asks for ciphertextDataIntegrityValueAlgorithm SHA_256 on Encrypt and verifies the
	// returned value (a mismatch counts as "bad_response").
	CDIV     bool
	Rate     float64       // open loop req/s; 0 → closed loop with Workers
	Workers  int           // closed-loop concurrency / open-loop max outstanding; default 32
	Duration time.Duration // 0 → until ctx is done
	Timeout  time.Duration // per request, default 250ms
	// Principals are the awsPrincipalArn values rotated through; default one IAM role ARN.
	Principals []string
	// CreateKeyPrefix is a fmt pattern with one %d ("demo-new-%d") for the ids of the CreateKey
	// share. Empty → the CreateKey share is folded into Metadata.
	CreateKeyPrefix string
	// CreateKeyHook, if set, is called before the GetKeyMetadata of a new key id, to create
	// the external key in the key manager first (as a customer does before KMS CreateKey). An
	// error counts as a failed CreateKey ("create_hook").
	CreateKeyHook func(ctx context.Context, keyID string) error
	// Record keeps every successful Encrypt (with its plaintext) in memory for Redecrypt.
	Record bool
	// RecordEvery keeps only one Encrypt in RecordEvery (default 1: all), bounding the memory
	// of long runs.
	RecordEvery int
	// OnFailure, if set, is called for every failed request with its (intended) start time,
	// operation and error class, from the goroutine that sent it: keep it cheap.
	OnFailure  func(start time.Time, op, class string)
	MaxSamples int // per-request sample log cap, default 10 M (then sampled)
	Now        func() time.Time
	Logger     *slog.Logger
}

// checkAndSetDefaults validates c and fills defaults. needKeys is false for the HealthPoller.
func (c *Config) checkAndSetDefaults(needKeys bool) error {
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return fmt.Errorf("%w: endpoint must be https://host[:port]", ErrConfig)
	}
	c.Endpoint = u.Scheme + "://" + u.Host
	c.Endpoints = slices.Clone(c.Endpoints)
	for i, e := range c.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("%w: endpoints[%d] must be https://host[:port]", ErrConfig, i)
		}
		c.Endpoints[i] = u.Scheme + "://" + u.Host
	}
	c.Prefix = strings.TrimSuffix(c.Prefix, "/")
	if err := xks.ValidPrefix(c.Prefix); err != nil {
		return fmt.Errorf("%w: prefix: %w", ErrConfig, err)
	}
	if c.Region == "" {
		return fmt.Errorf("%w: region is required", ErrConfig)
	}
	if err := c.Credential.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if c.Conns == 0 {
		c.Conns = DefaultConns
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxSamples == 0 {
		c.MaxSamples = DefaultMaxSamples
	}
	if c.RecordEvery == 0 {
		c.RecordEvery = 1
	}
	if c.Conns < 0 || c.Workers < 0 || c.Timeout < 0 || c.Duration < 0 || c.MaxSamples < 0 || c.RecordEvery < 0 {
		return fmt.Errorf("%w: conns, workers, timeout, duration, max samples and record every must not be negative", ErrConfig)
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) || c.Rate > 1e6 {
		return fmt.Errorf("%w: rate must be in [0, 1e6]", ErrConfig)
	}
	if len(c.Principals) == 0 {
		c.Principals = []string{DefaultPrincipal}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if !needKeys {
		return nil
	}
	if len(c.Keys) == 0 {
		return fmt.Errorf("%w: at least one key id is required", ErrConfig)
	}
	for _, k := range c.Keys {
		if err := xks.ValidKeyID(k); err != nil {
			return fmt.Errorf("%w: key id: %w", ErrConfig, err)
		}
	}
	if c.Mix == (Mix{}) {
		c.Mix = DefaultMix()
	}
	m := c.Mix
	for _, w := range []float64{m.Encrypt, m.Decrypt, m.Metadata, m.CreateKey} {
		if w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
			return fmt.Errorf("%w: mix weights must be finite and ≥ 0", ErrConfig)
		}
	}
	if c.CreateKeyPrefix == "" {
		c.Mix.Metadata += c.Mix.CreateKey
		c.Mix.CreateKey = 0
	} else {
		if strings.Count(c.CreateKeyPrefix, "%d") != 1 || strings.Count(c.CreateKeyPrefix, "%") != 1 {
			return fmt.Errorf("%w: create key prefix must contain exactly one %%d", ErrConfig)
		}
		if err := xks.ValidKeyID(fmt.Sprintf(c.CreateKeyPrefix, 1<<40)); err != nil {
			return fmt.Errorf("%w: create key prefix: %w", ErrConfig, err)
		}
	}
	if len(c.Sizes) == 0 {
		c.Sizes = DefaultSizes()
	}
	var sum float64
	for _, s := range c.Sizes {
		if s.Size < 1 || s.Size > maxPlaintext || s.Weight < 0 || math.IsNaN(s.Weight) || math.IsInf(s.Weight, 0) {
			return fmt.Errorf("%w: sizes must be 1..%d bytes with finite weights ≥ 0", ErrConfig, maxPlaintext)
		}
		sum += s.Weight
	}
	if sum <= 0 || m.Encrypt+m.Decrypt+m.Metadata+m.CreateKey <= 0 {
		return fmt.Errorf("%w: weights must not all be zero", ErrConfig)
	}
	return nil
}

// ParseMix parses "encrypt=0.45,decrypt=0.45,metadata=0.09,createkey=0.01" (names
// case-insensitive; missing ones are 0).
func ParseMix(s string) (Mix, error) {
	var m Mix
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return Mix{}, fmt.Errorf("%w: mix entry must be name=weight", ErrConfig)
		}
		w, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
			return Mix{}, fmt.Errorf("%w: mix weight must be a finite number ≥ 0", ErrConfig)
		}
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "encrypt":
			m.Encrypt = w
		case "decrypt":
			m.Decrypt = w
		case "metadata", "getkeymetadata":
			m.Metadata = w
		case "createkey", "create_key":
			m.CreateKey = w
		default:
			return Mix{}, fmt.Errorf("%w: unknown mix operation (want encrypt, decrypt, metadata, createkey)", ErrConfig)
		}
	}
	return m, nil
}

// ParseSizes parses "32:0.95,4300:0.05" (size in bytes : weight; a bare size has weight 1).
func ParseSizes(s string) ([]SizeWeight, error) {
	var out []SizeWeight
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		sz, wt, hasW := strings.Cut(part, ":")
		n, err := strconv.Atoi(strings.TrimSpace(sz))
		if err != nil || n < 1 || n > maxPlaintext {
			return nil, fmt.Errorf("%w: size must be 1..%d bytes", ErrConfig, maxPlaintext)
		}
		w := 1.0
		if hasW {
			w, err = strconv.ParseFloat(strings.TrimSpace(wt), 64)
			if err != nil || w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
				return nil, fmt.Errorf("%w: size weight must be a finite number ≥ 0", ErrConfig)
			}
		}
		out = append(out, SizeWeight{Size: n, Weight: w})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no sizes", ErrConfig)
	}
	return out, nil
}

// ringSizeFor is the per-key ring size with n keys in use: ringSize until ringBudget is shared
// out, never below ringMin.
func ringSizeFor(n int) int {
	return min(ringSize, max(ringMin, ringBudget/max(n, 1)))
}
