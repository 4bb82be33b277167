// Package kmsemu emulates a Cosmian KMS server (5.26, 5.27 or 5.28) on the wire: the KMIP 2.1 JSON TTLV endpoint
// (/kmip/2_1), the access-rights API (/access/*), /health, /version, /me and the AWS XKS scope
// (/aws/kms/xks/v1/*), quirks included (Cosmian's 401/418 XKS status codes, JSON nulls, raw AAD,
// ciphertextMetadata for tag lookups, owner-only access APIs, both XKS access-control generations).
//
// It exists because the real Cosmian KMS cannot run in this project's test environment. It is
// used by tests, `xksproxy serve --dev`, `xksproxy demo` and benchmarks; production code never
// depends on it. It is an independent implementation of the wire format (it does not import the
// production Cosmian client) so that a client bug cannot hide behind shared code.
//
// Only AES symmetric keys are managed. Every behaviour is taken from Cosmian's public source
// (github.com/Cosmian/kms, tag 5.26.0 / develop 7d07cae; for 5.27 the merged PRs #1107 and
// #1114; for 5.28 the release notes of 5.28.0 and PR #1198); comments name the source files. Servers given the same Store share one
// database, as the nodes of a Cosmian HA cluster do.
package kmsemu

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
)

// Generation is the Cosmian release whose behaviour the emulator follows.
type Generation string

const (
	// Cosmian526 is Cosmian KMS 5.26.0 (tag 5.26.0, develop 7d07cae): XKS calls run as
	// requestMetadata.awsPrincipalArn, CreateKey grants that ARN, some SigV4 failures are
	// plain-text 401s.
	Cosmian526 Generation = "5.26"
	// Cosmian527 is Cosmian KMS 5.27.1, the first release with PRs #1107 and #1114 (its
	// release notes name #1107): XKS calls run as the reserved "[aws-xks-service]" identity.
	// FIDELITY.md lists the differences.
	Cosmian527 Generation = "5.27"
	// Cosmian528 is Cosmian KMS 5.28.0: 5.27's XKS behaviour, and Get and Export refuse a key
	// whose Extractable is false or NeverExtractable true (advisory GHSA-8mmx-f92q-2gq8, PR #1198).
	Cosmian528 Generation = "5.28"
	// CosmianXKSService is the name this generation had before it was known by release: an
	// alias of Cosmian527 (`--cosmian-version xks-service` still works).
	CosmianXKSService = Cosmian527
	// NewestGeneration is the default.
	NewestGeneration = Cosmian528
)

// xksServiceAlias is the pre-release name ParseGeneration still accepts for Cosmian527.
const xksServiceAlias = "xks-service"

// Generations lists the accepted generations, oldest first.
var Generations = []Generation{Cosmian526, Cosmian527, Cosmian528}

// ParseGeneration accepts a Generation name or the alias "xks-service" (5.27); "" is the newest.
func ParseGeneration(s string) (Generation, error) {
	switch s {
	case "":
		return NewestGeneration, nil
	case xksServiceAlias:
		return Cosmian527, nil
	}
	for _, g := range Generations {
		if string(g) == s {
			return g, nil
		}
	}
	return "", fmt.Errorf("%w: unknown Cosmian version %q (known: %s, %s, %s; %s is an alias of %s)", ErrConfig, s, Cosmian526, Cosmian527, Cosmian528, xksServiceAlias, Cosmian527)
}

// Release is the version the generation's /version and XKS health report, e.g. "5.28.0".
func (g Generation) Release() string {
	switch g {
	case Cosmian526:
		return "5.26.0"
	case Cosmian527:
		return "5.27.1"
	}
	return "5.28.0"
}

// serviceIdentity reports whether XKS calls run as XKSServiceUser (PR #1107, from 5.27.1).
func (g Generation) serviceIdentity() bool { return g != Cosmian526 }

// enforcesExtractable reports whether Get and Export refuse non-extractable keys (5.28.0).
func (g Generation) enforcesExtractable() bool { return g == Cosmian528 }

// ErrConfig is wrapped by every New configuration error.
var ErrConfig = errors.New("kmsemu: invalid configuration")

// ErrNotFound is wrapped by the seeding/inspection methods when an object does not exist.
var ErrNotFound = errors.New("kmsemu: object not found")

// Config configures a Server. Zero values get the defaults documented per field.
type Config struct {
	Now            func() time.Time  // injected clock (lifecycle, XKS SigV4 skew); default time.Now
	Rand           io.Reader         // key and IV generation; default crypto/rand
	DefaultUser    string            // default "admin": the identity without token auth
	Tokens         map[string]string // bearer token → user; empty → no authentication (everyone is DefaultUser)
	VendorID       string            // default "cosmian"
	Version        string            // the /version text; default the generation's release ("5.26.0", "5.27.1", "5.28.0")
	XKS            *XKSConfig        // nil → the /aws scope is not served (404)
	CosmianVersion Generation        // default NewestGeneration
	// Store is shared with the servers given the same value: Cosmian's HA mode, several nodes
	// over one database (the same objects, tags and grants). nil → a store of this server's own.
	Store   *Store
	MaxBody int64        // default 2 MiB, applied to every route
	Logger  *slog.Logger // default discard
}

// Store is the emulated database: objects, grants and the server KEK that wraps keys at rest.
type Store struct {
	mu      sync.Mutex
	objects map[string]*object
	perms   map[string]map[string]opSet // uid → user → ops
	seq     int64
	kek     []byte
}

// NewStore returns an empty store; rand (nil → crypto/rand) generates its KEK.
func NewStore(rnd io.Reader) (*Store, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	st := &Store{objects: map[string]*object{}, perms: map[string]map[string]opSet{}, kek: make([]byte, 32)}
	if _, err := io.ReadFull(rnd, st.kek); err != nil {
		return nil, fmt.Errorf("kmsemu: generating the server KEK: %w", err)
	}
	return st, nil
}

// XKSConfig enables the /aws XKS scope with one SigV4 credential, as Cosmian's aws_xks_* settings.
type XKSConfig struct {
	Region, Service, AccessKeyID, SecretAccessKey string // Service default "kms-xks-proxy"
}

// DefaultMaxBody is actix-web's default JSON body limit, which Cosmian keeps for the XKS scope.
const DefaultMaxBody = 2 << 20

// kekUID names the server-internal key-encryption key in KeyWrappingData.
const kekUID = "kmsemu-server-kek"

// Server is an in-memory Cosmian KMS. It is safe for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	verifier *sigv4.Verifier
	st       *Store

	statsMu   sync.Mutex
	kmipStats map[string]int64
	xksStats  map[string]int64
	errCount  atomic.Int64

	faults atomic.Pointer[Faults]
	conns  connTracker
}

// New validates cfg, fills its defaults and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.DefaultUser == "" {
		cfg.DefaultUser = "admin"
	}
	if cfg.VendorID == "" {
		cfg.VendorID = "cosmian"
	}
	g, err := ParseGeneration(string(cfg.CosmianVersion))
	if err != nil {
		return nil, err
	}
	cfg.CosmianVersion = g
	if cfg.Version == "" {
		cfg.Version = g.Release()
	}
	if g.serviceIdentity() && cfg.DefaultUser == XKSServiceUser {
		return nil, fmt.Errorf("%w: the default user cannot be the reserved %s identity", ErrConfig, XKSServiceUser)
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxBody < 0 {
		return nil, fmt.Errorf("%w: MaxBody must be positive", ErrConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tokens := make(map[string]string, len(cfg.Tokens))
	for t, u := range cfg.Tokens {
		if t == "" || u == "" {
			return nil, fmt.Errorf("%w: empty token or user", ErrConfig)
		}
		tokens[t] = u
	}
	cfg.Tokens = tokens
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		kmipStats: map[string]int64{},
		xksStats:  map[string]int64{},
	}
	if cfg.XKS != nil {
		x := *cfg.XKS
		if x.Service == "" {
			x.Service = sigv4.DefaultService
		}
		s.cfg.XKS = &x
		v, err := sigv4.NewVerifier(sigv4.VerifierConfig{
			Region:      x.Region,
			Service:     x.Service,
			MaxSkew:     5 * time.Minute,
			Now:         cfg.Now,
			Credentials: []sigv4.Credential{{AccessKeyID: x.AccessKeyID, Secret: x.SecretAccessKey}},
		})
		if err != nil {
			return nil, fmt.Errorf("%w: XKS: %w", ErrConfig, err)
		}
		s.verifier = v
	}
	s.st = cfg.Store
	if s.st == nil {
		if s.st, err = NewStore(cfg.Rand); err != nil {
			return nil, err
		}
	}
	s.cfg.Store = s.st
	s.faults.Store(&Faults{})
	if s.verifier != nil && g.serviceIdentity() {
		// start_kms_server.rs runs migrate_aws_xks_key_access at start-up when XKS is enabled;
		// on a fresh store there is nothing to do, on a shared one it updates the existing keys.
		s.MigrateXKSAccess()
	}
	return s, nil
}

// Store returns the server's store, to start another node over it (Config.Store).
func (s *Server) Store() *Store { return s.st }

// Generation returns the Cosmian generation the server emulates.
func (s *Server) Generation() Generation { return s.cfg.CosmianVersion }

// Node returns a second server with the same configuration over the same store: another node of
// a Cosmian HA cluster on one database.
func (s *Server) Node() (*Server, error) {
	cfg := s.cfg
	cfg.Store = s.st
	return New(cfg)
}

func (s *Server) now() time.Time { return normalizeNow(s.cfg.Now()) }

func (s *Server) randBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.cfg.Rand, b); err != nil {
		return nil, fmt.Errorf("kmsemu: random: %w", err)
	}
	return b, nil
}

// ServeHTTP routes a request like Cosmian's actix application.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	xks := r.URL.Path == "/aws" || strings.HasPrefix(r.URL.Path, "/aws/")
	if s.applyFaults(w, r, xks) {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	switch {
	case xks:
		if s.cfg.XKS == nil {
			writeText(w, http.StatusNotFound, "", "") // actix default: empty 404
			return
		}
		s.serveXKS(w, r)
	case r.URL.Path == "/health" && r.Method == http.MethodGet:
		// routes/health.rs: {"status","latency_ms","dependencies":{"database":{"name","status"}}}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"UP","latency_ms":0,"dependencies":{"database":{"name":"sqlite","status":"UP"}}}`)
	case r.URL.Path == "/version" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.cfg.Version+" (OpenSSL 3.6.0 1 Oct 2025-non-FIPS)")
	default:
		s.serveAuthenticated(w, r)
	}
}

// serveAuthenticated is Cosmian's default scope: authentication middlewares, then routes.
func (s *Server) serveAuthenticated(w http.ResponseWriter, r *http.Request) {
	user, ok := s.authenticate(r)
	if !ok {
		s.errCount.Add(1)
		writeText(w, http.StatusUnauthorized, "", "No authentication provided.")
		return
	}
	p := r.URL.Path
	switch {
	case p == "/kmip/2_1" && r.Method == http.MethodPost:
		s.serveKMIP(w, r, user)
	case p == "/me" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]string{"user": user})
	case p == "/access/grant" && r.Method == http.MethodPost:
		s.serveGrant(w, r, user, true)
	case p == "/access/revoke" && r.Method == http.MethodPost:
		s.serveGrant(w, r, user, false)
	case strings.HasPrefix(p, "/access/list/") && r.Method == http.MethodGet:
		s.serveListAccess(w, r, user)
	case p == "/access/owned" && r.Method == http.MethodGet:
		s.serveOwned(w, user)
	case p == "/access/obtained" && r.Method == http.MethodGet:
		s.serveObtained(w, user)
	case p == "/access/create" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]bool{"has_create_permission": true}) // no privileged_users configured
	case p == "/access/privileged" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]bool{"has_privileged_access": false})
	default:
		writeText(w, http.StatusNotFound, "", "") // actix default: empty 404
	}
}

// authenticate maps the bearer token to a user (like JWT auth with the email claim). Without
// tokens every caller is DefaultUser. The reserved XKS identity is refused as a client (PR #1107).
func (s *Server) authenticate(r *http.Request) (string, bool) {
	if len(s.cfg.Tokens) == 0 {
		return s.cfg.DefaultUser, true
	}
	h := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	tok := []byte(h[len(prefix):])
	user, found := "", false
	for t, u := range s.cfg.Tokens { // constant-time per token; the map is small
		if subtle.ConstantTimeCompare(tok, []byte(t)) == 1 {
			user, found = u, true
		}
	}
	if !found || (s.cfg.CosmianVersion.serviceIdentity() && user == XKSServiceUser) {
		return "", false
	}
	return user, true
}

func (s *Server) countKMIP(op string) {
	s.statsMu.Lock()
	s.kmipStats[op]++
	s.statsMu.Unlock()
}

func (s *Server) countXKS(op string) {
	s.statsMu.Lock()
	s.xksStats[op]++
	s.statsMu.Unlock()
}

// Stats counts requests by operation.
type Stats struct {
	KMIP   map[string]int64 // by KMIP operation tag (Create, Encrypt, …; batch items counted each)
	XKS    map[string]int64 // by XKS API: health, metadata, encrypt, decrypt
	Errors int64            // error replies, injected faults included
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	st := Stats{KMIP: make(map[string]int64, len(s.kmipStats)), XKS: make(map[string]int64, len(s.xksStats)), Errors: s.errCount.Load()}
	for k, v := range s.kmipStats {
		st.KMIP[k] = v
	}
	for k, v := range s.xksStats {
		st.XKS[k] = v
	}
	return st
}

// ---- seeding and inspection (in-process only) ----

// KeyOptions describes a key seeded with CreateKey.
type KeyOptions struct {
	UsageMask      int32      // 0 → Encrypt|Decrypt|WrapKey|UnwrapKey (60)
	Tags           []string   // user tags; "_kk" is added
	ActivationDate *time.Time // nil → now − 1 min
	Material       []byte     // nil → 32 random bytes; else 16, 24 or 32 bytes (copied)
	Sensitive      bool       // Export/Get without a wrapping specification is refused
	// Extractable and NeverExtractable are stored as given (nil: absent); on 5.28 they are
	// filled as its Create does (Extractable defaults to true, NeverExtractable = !Extractable)
	// and a key that is not extractable cannot be exported at all.
	Extractable, NeverExtractable *bool
	Wrapped                       bool // stored wrapped by the server KEK: Get/Export return it wrapped unless NotWrapped
}

// CreateKey seeds an AES key owned by owner, as if owner had created it.
func (s *Server) CreateKey(owner, uid string, opts KeyOptions) error {
	if owner == "" || uid == "" || uid[0] == '[' {
		return fmt.Errorf("kmsemu: CreateKey: bad owner or uid %q", uid)
	}
	material := opts.Material
	if material == nil {
		var err error
		if material, err = s.randBytes(32); err != nil {
			return err
		}
	} else {
		material = append([]byte(nil), material...)
	}
	if n := len(material); n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("kmsemu: CreateKey: key material must be 16, 24 or 32 bytes, got %d", n)
	}
	now := s.now()
	act := now.Add(-time.Minute)
	if opts.ActivationDate != nil {
		act = normalizeNow(*opts.ActivationDate)
	}
	mask := opts.UsageMask
	if mask == 0 {
		mask = DefaultUsageMask
	}
	set := map[string]struct{}{"_kk": {}}
	for _, t := range opts.Tags {
		if t == "" || t[0] == '_' {
			return fmt.Errorf("kmsemu: CreateKey: bad user tag %q", t)
		}
		set[t] = struct{}{}
	}
	o := &object{
		uid: uid, owner: owner, state: statePreActive, length: int32(len(material) * 8),
		usageMask: mask, keyFormat: "TransparentSymmetricKey", activation: &act, initialDate: now,
		tags: sortedTags(set), sensitive: opts.Sensitive, material: material,
	}
	if !act.After(now) {
		o.state = stateActive
	}
	o.extractable, o.neverExtractable = s.extractability(opts.Extractable, opts.NeverExtractable)
	if opts.Wrapped {
		w, err := kwpWrap(s.st.kek, material)
		clear(material)
		if err != nil {
			return err
		}
		o.material, o.wrapped = w, true
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	if s.st.objects[uid] != nil {
		return fmt.Errorf("kmsemu: CreateKey: %s already exists", uid)
	}
	s.insertLocked(o)
	return nil
}

func (s *Server) insertLocked(o *object) {
	s.st.seq++
	o.seq = s.st.seq
	s.st.objects[o.uid] = o
}

// GrantAccess grants ops (wire names such as "encrypt", "getattributes") on uid to user, with the
// owner-only rules of POST /access/grant.
func (s *Server) GrantAccess(owner, uid, user string, ops ...string) error {
	set, err := parseOps(ops)
	if err != nil {
		return err
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	if kerr := s.grantLocked(owner, uid, user, set, true); kerr != nil {
		return kerr
	}
	return nil
}

func parseOps(ops []string) (opSet, error) {
	var set opSet
	for _, op := range ops {
		b, ok := opBit(op)
		if !ok {
			return 0, fmt.Errorf("kmsemu: unknown operation %q", op)
		}
		set |= b
	}
	return set, nil
}

// RevokeKey revokes uid with a KMIP RevocationReasonCode name ("KeyCompromise" → Compromised,
// anything else → Deactivated), bypassing permission checks.
func (s *Server) RevokeKey(uid, reasonCode string) error {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	o := s.st.objects[uid]
	if o == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, uid)
	}
	s.revokeLocked(o, reasonCode, nil, s.now())
	return nil
}

// ObjectInfo is what tests may see of an object (never its key material).
type ObjectInfo struct {
	UID, Owner, State string
	Tags              []string
	UsageMask         int32
	ActivationDate    time.Time
	Sensitive         bool
	// Extractable and NeverExtractable are the stored KMIP attributes (nil: absent).
	Extractable, NeverExtractable *bool
}

func (s *Server) infoLocked(o *object) ObjectInfo {
	info := ObjectInfo{
		UID: o.uid, Owner: o.owner, State: o.effectiveState(s.now()), Tags: append([]string(nil), o.tags...),
		UsageMask: o.usageMask, Sensitive: o.sensitive,
		Extractable: cloneBool(o.extractable), NeverExtractable: cloneBool(o.neverExtractable),
	}
	if o.activation != nil {
		info.ActivationDate = *o.activation
	}
	return info
}

// Objects lists every object (destroyed ones included), sorted by UID.
func (s *Server) Objects() []ObjectInfo {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	out := make([]ObjectInfo, 0, len(s.st.objects))
	for _, o := range s.st.objects {
		out = append(out, s.infoLocked(o))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UID < out[j].UID })
	return out
}

// Object returns one object's info.
func (s *Server) Object(uid string) (ObjectInfo, bool) {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	o := s.st.objects[uid]
	if o == nil {
		return ObjectInfo{}, false
	}
	return s.infoLocked(o), true
}

// plainMaterialLocked returns a copy of the plaintext key (the caller wipes it).
func (s *Server) plainMaterialLocked(o *object) ([]byte, error) {
	if o.wrapped {
		return kwpUnwrap(s.st.kek, o.material)
	}
	return append([]byte(nil), o.material...), nil
}

// KeyMaterialEqual reports, in constant time, whether uid holds the same key material on s and
// on other, without exposing it.
func (s *Server) KeyMaterialEqual(uid string, other *Server) (bool, error) {
	get := func(srv *Server) ([]byte, error) {
		srv.st.mu.Lock()
		defer srv.st.mu.Unlock()
		o := srv.st.objects[uid]
		if o == nil {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, uid)
		}
		return srv.plainMaterialLocked(o)
	}
	a, err := get(s)
	if err != nil {
		return false, err
	}
	defer clear(a)
	b, err := get(other)
	if err != nil {
		return false, err
	}
	defer clear(b)
	return len(a) > 0 && subtle.ConstantTimeCompare(a, b) == 1, nil
}

// Access returns the explicit grants on uid: user → ops in enum order.
func (s *Server) Access(uid string) map[string][]string {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	out := map[string][]string{}
	for u, ops := range s.st.perms[uid] {
		if ops != 0 {
			out[u] = ops.names()
		}
	}
	return out
}

// MigrateXKSAccess is migrate_aws_xks_key_access (start_kms_server.rs, PR #1107; New runs it for
// the newer generation): every object tagged aws-xks gets encrypt, decrypt and getattributes
// granted to "[aws-xks-service]" on behalf of its own owner (routes/aws_xks/tests.rs,
// legacy_key_owned_by_previous_default_user_is_migrated_to_reserved_identity); objects that
// already hold the three are skipped. It returns the number of objects updated.
func (s *Server) MigrateXKSAccess() int {
	need := opEncrypt | opDecrypt | opGetAttributes
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	n := 0
	for _, o := range s.st.objects {
		if o.hasTags([]string{"aws-xks"}) && s.st.perms[o.uid][XKSServiceUser]&need != need {
			if s.grantLocked(o.owner, o.uid, XKSServiceUser, need, true) == nil {
				n++
			}
		}
	}
	return n
}

// grantLocked is KMS::grant_access / revoke_access (crate/server/src/core/kms/permissions.rs)
// without privileged users: a "create" grant is dropped silently.
func (s *Server) grantLocked(owner, uid, user string, ops opSet, grant bool) *kmsError {
	ops &^= opCreate
	if ops == 0 {
		return nil
	}
	o := s.st.objects[uid]
	if o == nil || o.owner != owner {
		return deniedErr("Object with uid `" + uid + "` is not owned by owner `" + owner + "`")
	}
	if owner == user {
		if grant {
			return deniedErr("You can't grant yourself, you have already all rights on your own objects")
		}
		return deniedErr("You cannot revoke yourself; you should keep all rights to your objects.")
	}
	p := s.st.perms[uid]
	if p == nil {
		p = map[string]opSet{}
		s.st.perms[uid] = p
	}
	if grant {
		p[user] |= ops
	} else {
		p[user] &^= ops
		if p[user] == 0 {
			delete(p, user)
		}
	}
	return nil
}

// revokeLocked is revoke.rs revoke_key_core.
func (s *Server) revokeLocked(o *object, reasonCode string, compromiseDate *time.Time, now time.Time) {
	if reasonCode == "KeyCompromise" || reasonCode == "CACompromise" {
		o.state = stateCompromised
	} else {
		o.state = stateDeactivated
	}
	n := now
	o.deactivate = &n
	if compromiseDate != nil {
		c := *compromiseDate
		o.compromise = &c
	}
}
