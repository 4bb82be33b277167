package app

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xksproxy/xksproxy/certs"
	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/fleet"
	"github.com/xksproxy/xksproxy/proxy"
)

// FromFile turns a validated configuration file into an App configuration: it builds the
// certificate source of [tls] (files re-read on change, self-signed, or ACME — which obtains or
// loads its certificate now, so ctx bounds that), registers the certificate and credential-age
// metrics on the proxy's registry, loads each backend's ckms client file (TLS for the XKS path,
// KMIP access for migrations) and, with two or more backends, the cutover controller's settings.
func FromFile(ctx context.Context, f *config.File, version string, log *slog.Logger, progress io.Writer) (Config, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name := filepath.Base(f.Path)
	reg := prometheus.NewRegistry()
	certMetrics := certs.NewMetrics(reg)
	for i, p := range f.Prefix {
		if err := certMetrics.SetCredentialAges(p.Path, credentialAges(p)); err != nil {
			return Config{}, fmt.Errorf("%s: prefix[%d].credential: %w", name, i, err)
		}
	}
	certSrc, serverTLS, err := certSource(ctx, f, certMetrics, log)
	if err != nil {
		return Config{}, fmt.Errorf("%s: tls: %w", name, err)
	}
	lim := f.Server.Limits
	pc := proxy.Config{
		Listen:        f.Server.Listen,
		PreferHTTP1:   f.Server.PreferHTTP1,
		TLS:           serverTLS,
		MetricsListen: f.Server.MetricsListen, // "off" is proxy.MetricsDisabled
		Route:         proxy.Route{Primary: f.Route.Primary, Fallback: f.Route.Fallback},
		Limits:        lim.Proxy(),
		Health: proxy.HealthConfig{
			Interval:        f.Health.Interval.D(),
			TestKeyID:       f.Health.TestKeyID,
			PrincipalARN:    f.Health.PrincipalARN,
			DegradedLatency: f.Health.DegradedLatency.D(),
			Disabled:        f.Health.Disabled,
		},
		Admin:    proxy.AdminConfig{Listen: f.Admin.Listen, Token: f.Admin.Token, AllowRemote: f.Admin.AllowRemote},
		Version:  version,
		Logger:   log,
		Registry: reg,
	}
	switch {
	case f.Admin.CertFile != "":
		cert, err := tls.LoadX509KeyPair(f.Admin.CertFile, f.Admin.KeyFile)
		if err != nil {
			return Config{}, fmt.Errorf("%s: admin.cert_file: %w", name, err)
		}
		pc.Admin.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	case f.Admin.TLS:
		pc.Admin.TLS = serverTLS
	}
	var ownNames []string // the admin certificate's names, where its source picks it by SNI
	if f.Admin.TLS && f.Admin.CertFile == "" {
		ownNames = sourceNames(certSrc, f)
	}
	if f.Server.VersionLabel != "" {
		pc.Version = f.Server.VersionLabel
	}
	for _, p := range f.Prefix {
		pc.Prefixes = append(pc.Prefixes, proxy.PrefixConfig{
			Path: p.Path, Region: p.Region, Service: p.Service, Credentials: p.Credentials(),
		})
	}
	kmip := map[string]*cosmian.Client{}
	for i, b := range f.Backend {
		bc := proxy.BackendConfig{
			Name: b.Name, XKSURL: b.XKSURL, Region: b.Region, Service: b.Service,
			Credential: b.SigV4(), Timeout: b.Timeout.D(), MaxIdleConns: b.MaxIdleConns, Model: b.Model,
		}
		if b.CKMSConfig != "" {
			ck, err := cosmian.LoadCKMSConfig(b.CKMSConfig)
			if err != nil {
				return Config{}, fmt.Errorf("%s: backend[%d].ckms_config: %w", name, i, err)
			}
			if bc.TLS, err = ck.TLSConfig(); err != nil {
				return Config{}, fmt.Errorf("%s: backend[%d].ckms_config: %w", name, i, err)
			}
			cc, err := ck.ClientConfig()
			if err != nil {
				return Config{}, fmt.Errorf("%s: backend[%d].ckms_config: %w", name, i, err)
			}
			if kmip[b.Name], err = cosmian.NewClient(cc); err != nil {
				return Config{}, fmt.Errorf("%s: backend[%d].ckms_config: %w", name, i, err)
			}
		}
		pc.Backends = append(pc.Backends, bc)
	}
	for name, c := range kmip {
		// The same owner clients tell the proxy a key's real usage and status (proxy/keyinfo.go).
		if pc.KeyInfo.Readers == nil {
			pc.KeyInfo.Readers = map[string]proxy.KeyAttributeReader{}
		}
		pc.KeyInfo.Readers[name] = c
	}
	out := Config{Proxy: pc, Logger: log, Certs: certSrc, CertMetrics: certMetrics}
	if len(f.Backend) < 2 {
		return out, nil
	}
	co := f.Cutover
	src, dst := kmip[co.Source], kmip[co.Target]
	if src == nil || dst == nil {
		return Config{}, fmt.Errorf("%s: cutover: backends %q and %q both need ckms_config (KMIP access as the keys' owner) to migrate", name, co.Source, co.Target)
	}
	var rightsSyncRate float64 // 0: the controller's default
	if co.RightsSyncRate != nil {
		rightsSyncRate = *co.RightsSyncRate
	}
	cc := &cutover.Config{
		Source:      cutover.Backend{Name: co.Source, KMIP: src, ACL: cutover.ACLBoth},
		Target:      cutover.Backend{Name: co.Target, KMIP: dst, ACL: co.TargetACL},
		JournalPath: co.JournalPath,
		Select:      cutover.Selection{Mode: cutover.SelectMode(co.Select), Tag: co.Tag, Keys: co.Keys, Unmovable: co.Unmovable},
		Pace: cutover.PaceConfig{Rate: co.PaceRate(), MinConcurrency: co.MinConcurrency,
			MaxConcurrency: cmp.Or(co.MaxConcurrency, co.Concurrency)},

		RevokeSourceGrantsOnFinalize: co.RevokeSourceGrantsOnFinalize,
		GrantEveryoneForServiceKeys:  co.GrantEveryoneForServiceKeys,
		RightsSync:                   cutover.RightsSyncConfig{Rate: rightsSyncRate},
		Shadow:                       cutover.ShadowConfig{Duration: co.ShadowDuration.D(), SampleRate: co.ShadowSampleRate},
		Probation: cutover.ProbationConfig{
			Duration:     co.ProbationDuration.D(),
			MaxErrorRate: co.ProbationMaxErrorRate,
			MaxP99:       co.ProbationMaxP99.D(),
			MinRequests:  co.ProbationMinRequests,
		},
		Logger:   log,
		Registry: pc.Registry,
		Progress: progress,
	}
	out.Cutover = cc
	if fl := f.Fleet; fl != nil {
		out.Fleet = &fleet.Config{
			Endpoints: fl.EtcdEndpoints, Member: fl.Member, KeyPrefix: fl.KeyPrefix,
			LeaseTTL: fl.LeaseTTL.D(), DialTimeout: fl.DialTimeout.D(),
			CAFile: fl.CAFile, CertFile: fl.CertFile, KeyFile: fl.KeyFile,
			Username: fl.Username, Password: fl.Password,
			Address: fl.Advertise, Version: version, Logger: log,
		}
		out.FleetAdmin = FleetAdmin{Secret: fl.Secret, ServerName: fl.AdminServerName, OwnNames: ownNames}
		if fl.AdminCAFile != "" {
			if out.FleetAdmin.RootCAs, err = loadRoots(fl.AdminCAFile); err != nil {
				return Config{}, fmt.Errorf("%s: fleet.admin_ca_file: %w", name, err)
			}
		}
	}
	return out, nil
}

// sourceNames are the DNS names the server certificate of [tls] is served for.
func sourceNames(src certs.Source, f *config.File) []string {
	switch s := src.(type) {
	case interface{ Leaf() *x509.Certificate }: // files
		if l := s.Leaf(); l != nil {
			return l.DNSNames
		}
	case interface{ Certificate() *x509.Certificate }: // self-signed
		if l := s.Certificate(); l != nil {
			return l.DNSNames
		}
	}
	if f.TLS.Mode == config.TLSACME {
		return f.TLS.Domains
	}
	return nil
}
