package app

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/proxy"
	"github.com/xksproxy/xksproxy/xks"
)

// FromFile turns a validated configuration file into an App configuration: it loads the TLS
// certificate, each backend's ckms client file (TLS for the XKS path, KMIP access for
// migrations) and, with two or more backends, the cutover controller's settings.
func FromFile(f *config.File, version string, log *slog.Logger, progress io.Writer) (Config, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name := filepath.Base(f.Path)
	serverTLS, err := serverTLS(f)
	if err != nil {
		return Config{}, fmt.Errorf("%s: tls: %w", name, err)
	}
	lim := f.Server.Limits
	pc := proxy.Config{
		Listen:        f.Server.Listen,
		TLS:           serverTLS,
		MetricsListen: f.Server.MetricsListen,
		Route:         proxy.Route{Primary: f.Route.Primary, Fallback: f.Route.Fallback},
		Limits: proxy.Limits{
			MaxBodyBytes:      lim.MaxBodyBytes,
			MaxHeaderBytes:    lim.MaxHeaderBytes,
			MaxHeaderCount:    lim.MaxHeaderCount,
			ReadHeaderTimeout: lim.ReadHeaderTimeout.D(),
			ReadTimeout:       lim.ReadTimeout.D(),
			WriteTimeout:      lim.WriteTimeout.D(),
			IdleTimeout:       lim.IdleTimeout.D(),
			Budget:            lim.Budget.D(),
			MaxInFlight:       lim.MaxInFlight,
			XKS:               xks.Limits{MaxPayload: lim.MaxPayloadBytes, MaxAAD: lim.MaxAADBytes},
		},
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
		Registry: prometheus.NewRegistry(),
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
	out := Config{Proxy: pc, Logger: log}
	if len(f.Backend) < 2 {
		return out, nil
	}
	co := f.Cutover
	src, dst := kmip[co.Source], kmip[co.Target]
	if src == nil || dst == nil {
		return Config{}, fmt.Errorf("%s: cutover: backends %q and %q both need ckms_config (KMIP access as the keys' owner) to migrate", name, co.Source, co.Target)
	}
	cc := &cutover.Config{
		Source:      cutover.Backend{Name: co.Source, KMIP: src, ACL: cutover.ACLBoth},
		Target:      cutover.Backend{Name: co.Target, KMIP: dst, ACL: co.TargetACL},
		JournalPath: co.JournalPath,
		Select:      cutover.Selection{Mode: co.Select, Tag: co.Tag, Keys: co.Keys},
		Concurrency: co.Concurrency,
		Shadow:      cutover.ShadowConfig{Duration: co.ShadowDuration.D()},
		Probation: cutover.ProbationConfig{
			Duration:    co.ProbationDuration.D(),
			MaxP99:      co.ProbationMaxP99.D(),
			MinRequests: co.ProbationMinRequests,
		},
		Logger:   log,
		Registry: pc.Registry,
		Progress: progress,
	}
	if co.ShadowSampleRate != nil {
		cc.Shadow.SampleRate = *co.ShadowSampleRate
	}
	if co.ProbationMaxErrorRate != nil {
		cc.Probation.MaxErrorRate = *co.ProbationMaxErrorRate
	}
	out.Cutover = cc
	return out, nil
}

func serverTLS(f *config.File) (*tls.Config, error) {
	switch f.TLS.Mode {
	case config.TLSFiles:
		return proxy.LoadTLS(f.TLS.CertFile, f.TLS.KeyFile)
	case config.TLSSelfSigned:
		c, _, err := proxy.SelfSignedTLS(f.TLS.Hosts...)
		return c, err
	default:
		return nil, fmt.Errorf("mode %q is not supported by this build", f.TLS.Mode)
	}
}
