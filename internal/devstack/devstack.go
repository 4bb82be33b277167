// Package devstack runs a complete xksproxy environment in one process: two emulated Cosmian KMS
// servers (A and B) on loopback TLS, and the proxy with its cutover controller in front of them.
// It powers `xksproxy serve --dev` and `xksproxy demo`. Production code never uses it.
package devstack

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xksproxy/xksproxy/app"
	"github.com/xksproxy/xksproxy/certs"
	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/fleet"
	"github.com/xksproxy/xksproxy/internal/cli"
	"github.com/xksproxy/xksproxy/proxy"
	"github.com/xksproxy/xksproxy/sigv4"
)

// Usage names what an emulated key may do, as `--dev-key ID[:USAGE]` spells it.
type Usage string

// Key usages.
const (
	UsageEncryptDecrypt Usage = "encrypt-decrypt"
	UsageEncrypt        Usage = "encrypt"
	UsageDecrypt        Usage = "decrypt"
	UsageNone           Usage = "none"
)

// Mask is the KMIP usage mask for u.
func (u Usage) Mask() (int32, error) {
	switch u {
	case UsageEncryptDecrypt, "":
		return cosmian.UsageXKS, nil
	case UsageEncrypt:
		return cosmian.UsageEncrypt | cosmian.UsageWrapKey, nil
	case UsageDecrypt:
		return cosmian.UsageDecrypt | cosmian.UsageUnwrapKey, nil
	case UsageNone:
		// Neither Encrypt nor Decrypt. Cosmian 5.26 skips such a key when it selects one for a
		// crypto operation, so XKS calls get KeyNotFoundException, not InvalidKeyUsageException.
		return cosmian.UsageSign | cosmian.UsageVerify, nil
	}
	return 0, fmt.Errorf("usage %q: want encrypt-decrypt, encrypt, decrypt or none", u)
}

// Key is one seeded key.
type Key struct {
	ID      string
	Usage   Usage
	Tags    []string // extra user tags; "aws-xks" is always added
	Grants  []string // principals granted encrypt, decrypt, getattributes; default "*"
	Revoked string   // "" or a KMIP revocation reason code (revoked right after creation)
	// Unexportable marks the key Extractable = false: from Cosmian 5.28 on it cannot be
	// exported, so a migration cannot move it.
	Unexportable bool
}

// ParseKey reads `ID[:USAGE]` (the rule xksproxy checks its --dev-key flags with).
func ParseKey(s string) (Key, error) {
	id, usage, err := cli.SplitKey(s)
	if err != nil {
		return Key{}, err
	}
	return Key{ID: id, Usage: Usage(usage)}, nil
}

// DefaultKeys is the key set of `serve --dev` when no --dev-key is given: one of each usage.
func DefaultKeys() []Key {
	return []Key{
		{ID: "dev-key-1", Usage: UsageEncryptDecrypt},
		{ID: "dev-key-2", Usage: UsageEncryptDecrypt},
		{ID: "dev-key-3", Usage: UsageEncryptDecrypt},
		{ID: "dev-encrypt-only", Usage: UsageEncrypt},
		{ID: "dev-decrypt-only", Usage: UsageDecrypt},
		{ID: "dev-no-usage", Usage: UsageNone},
	}
}

// Config describes the environment.
type Config struct {
	Listen        string // proxy listener; default 127.0.0.1:8443
	MetricsListen string // default 127.0.0.1:0
	AdminListen   string // default 127.0.0.1:0
	Prefix        string // default "/aws"
	Region        string // default us-east-1
	Credential    sigv4.Credential
	Keys          []Key
	// KeysOnB seeds B with the same keys and material as A (serve --dev); otherwise B starts
	// empty, as the target of a migration (demo).
	KeysOnB bool
	// CosmianA and CosmianB are the Cosmian generations the emulators run. Default: A runs
	// Cosmian 5.26's per-ARN rules, B the newest release's (reserved identity, keys that are
	// not extractable cannot be exported).
	CosmianA, CosmianB kmsemu.Generation
	JournalPath        string // default: a file in a fresh temporary directory
	Probation          cutover.ProbationConfig
	Shadow             cutover.ShadowConfig
	// GrantEveryoneForServiceKeys is the operator's consent of cutover.Config's field.
	GrantEveryoneForServiceKeys bool
	// RightsSyncInterval is cutover.Config's (0: its default).
	RightsSyncInterval time.Duration
	// Select is cutover.Config's key selection (zero: keys tagged aws-xks).
	Select   cutover.Selection
	Logger   *slog.Logger
	Progress interface{ Write([]byte) (int, error) }
	Version  string
	// Fleet, when set, makes every proxy of the stack a member of a fleet coordinated through
	// that store: the first proxy is member "r1", AddReplica starts more. Member and Logger
	// are filled per replica.
	Fleet *fleet.Config
	// Budget and BackendTimeout override the proxy's 240 ms budget and 200 ms per-attempt
	// timeout; tests under the race detector need more (it slows everything several times).
	Budget, BackendTimeout time.Duration
}

// Stack is a running environment.
type Stack struct {
	A, B           *kmsemu.Server
	ARun, BRun     *kmsemu.Running
	App            *app.App
	Credential     sigv4.Credential // what AWS KMS would be configured with
	Prefix, Region string
	Endpoint       string // https://127.0.0.1:PORT
	ServerCert     *x509.Certificate
	CertPool       *x509.CertPool
	AdminURL       string
	AdminToken     string
	MetricsURL     string
	JournalPath    string
	Keys           []Key

	main  *Replica
	extra []*Replica
	// fleetSecret signs the calls a replica forwards to the driver (fleet mode): one per stack.
	fleetSecret []byte
	tempDir     string
	newConfig   func(listen, member, journal string) app.Config
}

// Replica is one proxy process of the stack (in fleet mode, one member of the fleet).
type Replica struct {
	Name       string
	App        *app.App
	Endpoint   string // https://127.0.0.1:PORT
	AdminURL   string
	MetricsURL string

	s       *Stack
	listen  string
	journal string
	mut     func(*app.Config)
	cancel  context.CancelFunc
	done    chan error
}

// RandomCredential makes an AWS-shaped SigV4 credential: a 20-character access key id from
// A-Z2-7 and a 43-character base64 secret (256 bits).
func RandomCredential(prefix string) (sigv4.Credential, error) {
	id := make([]byte, 20)
	if _, err := rand.Read(id); err != nil {
		return sigv4.Credential{}, err
	}
	akid := prefix + base32.StdEncoding.EncodeToString(id)
	akid = akid[:20]
	sec := make([]byte, 32)
	if _, err := rand.Read(sec); err != nil {
		return sigv4.Credential{}, err
	}
	return sigv4.Credential{AccessKeyID: akid, Secret: base64.RawStdEncoding.EncodeToString(sec)}, nil
}

func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// backend is one emulated Cosmian server with everything the proxy needs to reach it.
type backend struct {
	emu   *kmsemu.Server
	run   *kmsemu.Running
	cred  sigv4.Credential
	token string
}

func startBackend(name string, gen kmsemu.Generation, region string, log *slog.Logger) (*backend, error) {
	cred, err := RandomCredential("AKIA")
	if err != nil {
		return nil, err
	}
	tok, err := randomToken()
	if err != nil {
		return nil, err
	}
	emu, err := kmsemu.New(kmsemu.Config{
		DefaultUser:    "admin",
		Tokens:         map[string]string{tok: "admin"},
		XKS:            &kmsemu.XKSConfig{Region: region, AccessKeyID: cred.AccessKeyID, SecretAccessKey: cred.Secret},
		CosmianVersion: gen,
		Logger:         log.With("emulator", name),
	})
	if err != nil {
		return nil, err
	}
	run, err := emu.Start("127.0.0.1:0", true)
	if err != nil {
		return nil, err
	}
	return &backend{emu: emu, run: run, cred: cred, token: tok}, nil
}

func (b *backend) kmip() (*cosmian.Client, error) {
	hc := &httpClient{pool: b.run.CertPool}
	return cosmian.NewClient(cosmian.ClientConfig{
		BaseURL: b.run.URL,
		HTTP:    hc.client(),
		Header:  map[string][]string{"Authorization": {"Bearer " + b.token}},
	})
}

func (b *backend) seed(k Key, material []byte, gen kmsemu.Generation) error {
	mask, err := k.Usage.Mask()
	if err != nil {
		return err
	}
	tags := append([]string{cosmian.XKSTag}, k.Tags...)
	opts := kmsemu.KeyOptions{UsageMask: mask, Tags: tags, Material: material}
	if k.Unexportable {
		no := false
		opts.Extractable = &no
	}
	if err := b.emu.CreateKey("admin", k.ID, opts); err != nil {
		return err
	}
	grants := k.Grants
	if len(grants) == 0 {
		grants = []string{"*"}
	}
	ops := []string{cosmian.OpEncrypt, cosmian.OpDecrypt, cosmian.OpGetAttributes}
	for _, g := range grants {
		if err := b.emu.GrantAccess("admin", k.ID, g, ops...); err != nil {
			return err
		}
	}
	if gen != kmsemu.Cosmian526 {
		if err := b.emu.GrantAccess("admin", k.ID, cosmian.XKSServiceUser, ops...); err != nil {
			return err
		}
	}
	if k.Revoked != "" {
		return b.emu.RevokeKey(k.ID, k.Revoked)
	}
	return nil
}

// Start builds and starts the environment. Close stops it.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8443"
	}
	if cfg.MetricsListen == "" {
		cfg.MetricsListen = "127.0.0.1:0"
	}
	if cfg.AdminListen == "" {
		cfg.AdminListen = "127.0.0.1:0"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "/aws"
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.CosmianA == "" {
		cfg.CosmianA = kmsemu.Cosmian526
	}
	if cfg.CosmianB == "" {
		cfg.CosmianB = kmsemu.NewestGeneration
	}
	if cfg.Version == "" {
		cfg.Version = "xksproxy dev"
	}
	if cfg.Credential == (sigv4.Credential{}) {
		c, err := RandomCredential("AKIA")
		if err != nil {
			return nil, err
		}
		cfg.Credential = c
	}
	s := &Stack{Credential: cfg.Credential, Prefix: cfg.Prefix, Region: cfg.Region, Keys: cfg.Keys}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	a, err := startBackend("a", cfg.CosmianA, cfg.Region, log)
	if err != nil {
		return nil, fmt.Errorf("devstack: backend a: %w", err)
	}
	s.A, s.ARun = a.emu, a.run
	b, err := startBackend("b", cfg.CosmianB, cfg.Region, log)
	if err != nil {
		return nil, fmt.Errorf("devstack: backend b: %w", err)
	}
	s.B, s.BRun = b.emu, b.run
	for _, k := range cfg.Keys {
		material := make([]byte, 32)
		if _, err := rand.Read(material); err != nil {
			return nil, err
		}
		err := a.seed(k, material, cfg.CosmianA)
		if err == nil && cfg.KeysOnB {
			err = b.seed(k, material, cfg.CosmianB)
		}
		clear(material)
		if err != nil {
			return nil, fmt.Errorf("devstack: seeding key %q: %w", k.ID, err)
		}
	}

	src, err := certs.SelfSigned("localhost", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	serverTLS := src.TLSConfig()
	s.ServerCert = src.Certificate()
	s.CertPool = src.CertPool()
	if s.AdminToken, err = randomToken(); err != nil {
		return nil, err
	}
	s.AdminToken += s.AdminToken // ≥ 32 characters
	if cfg.Fleet != nil {
		s.fleetSecret = make([]byte, 32)
		if _, err := rand.Read(s.fleetSecret); err != nil {
			return nil, err
		}
	}
	s.JournalPath = cfg.JournalPath
	if s.JournalPath == "" {
		if s.tempDir, err = os.MkdirTemp("", "xksproxy-dev-"); err != nil {
			return nil, err
		}
		s.JournalPath = filepath.Join(s.tempDir, "cutover.json")
	}
	kmipA, err := a.kmip()
	if err != nil {
		return nil, err
	}
	kmipB, err := b.kmip()
	if err != nil {
		return nil, err
	}
	// newConfig builds the App's configuration; RestartProxy calls it again with the first
	// proxy's address, so a restarted proxy listens where clients already connect. Each call
	// gets a fresh metrics registry (collectors register once per registry).
	s.newConfig = func(listen, member, journal string) app.Config {
		reg := prometheus.NewRegistry()
		backendTLS := &tls.Config{RootCAs: a.run.CertPool, MinVersion: tls.VersionTLS12}
		backendTLSB := &tls.Config{RootCAs: b.run.CertPool, MinVersion: tls.VersionTLS12}
		out := app.Config{
			Logger: log,
			Proxy: proxy.Config{
				Listen:        listen,
				TLS:           serverTLS,
				MetricsListen: cfg.MetricsListen,
				Prefixes: []proxy.PrefixConfig{{
					Path: cfg.Prefix, Region: cfg.Region, Credentials: []sigv4.Credential{cfg.Credential},
				}},
				Backends: []proxy.BackendConfig{
					{Name: "a", XKSURL: a.run.URL + "/aws", Region: cfg.Region, Credential: a.cred, TLS: backendTLS, Model: "Cosmian KMS " + cfg.CosmianA.Release() + " (emulated)", Timeout: cfg.BackendTimeout},
					{Name: "b", XKSURL: b.run.URL + "/aws", Region: cfg.Region, Credential: b.cred, TLS: backendTLSB, Model: "Cosmian KMS " + cfg.CosmianB.Release() + " (emulated)", Timeout: cfg.BackendTimeout},
				},
				Limits:   proxy.Limits{Budget: cfg.Budget, AllowSlowBudget: cfg.Budget > 250*time.Millisecond},
				KeyInfo:  proxy.KeyInfoConfig{Readers: map[string]proxy.KeyAttributeReader{"a": kmipA, "b": kmipB}},
				Route:    proxy.Route{Primary: "a"},
				Admin:    proxy.AdminConfig{Listen: cfg.AdminListen, Token: s.AdminToken},
				Version:  cfg.Version,
				Logger:   log,
				Registry: reg,
			},
			Cutover: &cutover.Config{
				Source:      cutover.Backend{Name: "a", KMIP: kmipA, ACL: cutoverACL(cfg.CosmianA)},
				Target:      cutover.Backend{Name: "b", KMIP: kmipB, ACL: cutoverACL(cfg.CosmianB)},
				JournalPath: journal,
				Select:      cfg.Select,
				Probation:   cfg.Probation,
				Shadow:      cfg.Shadow,
				Logger:      log,

				GrantEveryoneForServiceKeys: cfg.GrantEveryoneForServiceKeys,
				RightsSync:                  cutover.RightsSyncConfig{Interval: cfg.RightsSyncInterval},
				Registry:                    reg,
				Progress:                    cfg.Progress,
			},
		}
		if cfg.Fleet != nil {
			fc := *cfg.Fleet
			fc.Member, fc.Logger = member, log.With("member", member)
			if fc.Version == "" {
				fc.Version = cfg.Version
			}
			out.Fleet = &fc
			out.FleetAdmin = app.FleetAdmin{Secret: s.fleetSecret}
			out.Proxy.Logger = fc.Logger
		}
		return out
	}
	s.main = &Replica{Name: "r1", s: s, listen: cfg.Listen, journal: s.JournalPath}
	if err := s.main.run(ctx); err != nil {
		return nil, err
	}
	s.App, s.Endpoint, s.AdminURL, s.MetricsURL = s.main.App, s.main.Endpoint, s.main.AdminURL, s.main.MetricsURL
	ok = true
	return s, nil
}

// run builds the replica's App, runs it in the background and waits until the proxy listens.
// On failure nothing is left running.
func (r *Replica) run(ctx context.Context) error {
	cfg := r.s.newConfig(r.listen, r.Name, r.journal)
	if r.mut != nil {
		r.mut(&cfg)
	}
	ap, err := app.New(cfg)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ap.Run(runCtx) }()
	select {
	case <-ap.Proxy.Ready():
	case err := <-done:
		cancel()
		return fmt.Errorf("devstack: proxy: %w", err)
	case <-ctx.Done():
		cancel()
		<-done
		return ctx.Err()
	}
	r.App, r.cancel, r.done = ap, cancel, done
	r.listen = ap.Proxy.Addr().String() // a restart listens where clients already connect
	r.Endpoint = "https://" + r.listen
	r.AdminURL, r.MetricsURL = "", ""
	if ad := ap.Proxy.AdminAddr(); ad != nil {
		r.AdminURL = "http://" + ad.String()
	}
	if md := ap.Proxy.MetricsAddr(); md != nil {
		r.MetricsURL = "http://" + md.String() + "/metrics"
	}
	return nil
}

// Running reports whether the replica's proxy runs (not stopped).
func (r *Replica) Running() bool { return r.cancel != nil }

// Stop stops the replica (in-flight requests finish, the controller flushes its journal)
// and waits for it, at most 15s.
func (r *Replica) Stop() error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	case <-time.After(15 * time.Second):
		return errors.New("devstack: proxy did not stop within 15s")
	}
}

// Restart starts a stopped replica again on the same address and journal (or its local copy
// in fleet mode); the admin and metrics listeners get new ports.
func (r *Replica) Restart(ctx context.Context) error {
	if err := r.Stop(); err != nil {
		return fmt.Errorf("devstack: restart: stopping the proxy: %w", err)
	}
	if err := r.run(ctx); err != nil {
		return fmt.Errorf("devstack: restart: %w", err)
	}
	return nil
}

// AddReplica starts one more proxy on the same emulators, credentials and certificate, with its
// own journal file (in fleet mode: its local copy of the applied epoch), named name.
func (s *Stack) AddReplica(ctx context.Context, name string) (*Replica, error) {
	return s.AddReplicaWith(ctx, name, nil)
}

// AddReplicaWith is AddReplica with mut applied to the replica's App configuration (at every
// start), e.g. to reach the fleet store through another address.
func (s *Stack) AddReplicaWith(ctx context.Context, name string, mut func(*app.Config)) (*Replica, error) {
	dir, err := os.MkdirTemp(s.tempDirOr(), "replica-")
	if err != nil {
		return nil, err
	}
	r := &Replica{Name: name, s: s, listen: "127.0.0.1:0", journal: filepath.Join(dir, "cutover.json"), mut: mut}
	if err := r.run(ctx); err != nil {
		return nil, err
	}
	s.extra = append(s.extra, r)
	return r, nil
}

// Main is the stack's first proxy as a Replica (member "r1" in fleet mode).
func (s *Stack) Main() *Replica { return s.main }

func (s *Stack) tempDirOr() string {
	if s.tempDir != "" {
		return s.tempDir
	}
	return filepath.Dir(s.JournalPath)
}

// RestartProxy simulates a restart of the xksproxy process: it stops the App (proxy and
// cutover controller) and builds a new one on the same emulators, credentials, certificate and
// journal, listening on the same address, so clients reconnect to the same endpoint. The new
// App reads the journal and resumes an interrupted migration (app.Run calls Resume). Requests
// sent while no proxy listens fail, as with a real restart. The admin and metrics listeners get
// new ports (AdminURL and MetricsURL are updated). If the new App cannot start (a corrupt
// journal, say), the error is returned and no proxy runs; Close still stops the emulators.
func (s *Stack) RestartProxy(ctx context.Context) error {
	if err := s.main.Restart(ctx); err != nil {
		return err
	}
	s.App, s.Endpoint, s.AdminURL, s.MetricsURL = s.main.App, s.main.Endpoint, s.main.AdminURL, s.main.MetricsURL
	return nil
}

// ClientTLS is a TLS configuration that trusts the proxy's self-signed certificate.
func (s *Stack) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: s.CertPool, MinVersion: tls.VersionTLS12, ServerName: "localhost"}
}

// Close stops the proxy and both emulators and removes temporary files.
func (s *Stack) Close() error {
	var errs []error
	for _, r := range s.extra {
		if err := r.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.main != nil {
		if err := s.main.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range []*kmsemu.Running{s.ARun, s.BRun} {
		if r != nil {
			if err := r.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if s.tempDir != "" {
		errs = append(errs, os.RemoveAll(s.tempDir))
	}
	return errors.Join(errs...)
}

// cutoverACL is the grants a generation's XKS calls need: 5.26 authorizes the caller's ARN, 5.27
// and 5.28 the reserved [aws-xks-service] identity.
func cutoverACL(g kmsemu.Generation) string {
	if g == kmsemu.Cosmian526 {
		return cutover.ACLARN
	}
	return cutover.ACLService
}
