package app

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/xksproxy/xksproxy/certs"
	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/proxy"
)

// ErrNoCertificates is returned by a trusted_roots_file without a PEM certificate.
var ErrNoCertificates = errors.New("no PEM certificate found")

// maxRootsFileBytes bounds tls.trusted_roots_file (a bundle of a few roots).
const maxRootsFileBytes = 1 << 20

// certSource builds the certificate source of [tls]. Mode "acme" obtains (or loads from its
// storage) the certificate now, before the proxy listens: the TLS-ALPN-01 challenge of a first
// order is answered on server.listen's port by the ACME client itself, later renewals through
// the proxy's listener (the source's GetCertificate answers acme-tls/1 handshakes).
func certSource(ctx context.Context, f *config.File, m *certs.Metrics, log *slog.Logger) (certs.Source, *tls.Config, error) {
	t := f.TLS
	var src certs.Source
	switch t.Mode {
	case config.TLSFiles:
		s, err := certs.NewFiles(certs.FilesConfig{
			CertFile: t.CertFile, KeyFile: t.KeyFile, PollInterval: t.PollInterval.D(),
			Logger: log, Metrics: m,
		})
		if err != nil {
			return nil, nil, err
		}
		src = s
	case config.TLSSelfSigned:
		s, err := certs.SelfSigned(t.Hosts...)
		if err != nil {
			return nil, nil, err
		}
		s.SetMetrics(m)
		src = s
	case config.TLSACME:
		host, port, err := listenHostPort(cmp.Or(f.Server.Listen, proxy.DefaultListen))
		if err != nil {
			return nil, nil, err
		}
		ac := certs.ACMEConfig{
			Domains:            t.Domains,
			CA:                 t.CA,
			Email:              t.Email,
			StorageDir:         t.StorageDir,
			Challenge:          t.Challenge,
			PreferredChainRoot: t.PreferredChainRoot,
			TLSALPNPort:        port,
			ListenHost:         host,
			Logger:             log,
			Metrics:            m,
		}
		if t.TrustedRootsFile != "" {
			if ac.TrustedRoots, err = loadRoots(t.TrustedRootsFile); err != nil {
				return nil, nil, fmt.Errorf("trusted_roots_file: %w", err)
			}
		}
		s, err := certs.NewACME(ctx, ac)
		if err != nil {
			return nil, nil, err
		}
		src = s
	default:
		return nil, nil, fmt.Errorf("mode %q is not supported by this build", t.Mode)
	}
	// The proxy applies its TLS policy (versions, suites, ALPN) to whatever it is handed.
	return src, src.TLSConfig(), nil
}

// listenHostPort splits server.listen for the TLS-ALPN-01 solver ("0.0.0.0" and "" mean all).
func listenHostPort(listen string) (string, int, error) {
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("server.listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("server.listen %q: acme needs a fixed port (AWS connects to 443)", listen)
	}
	if host == "0.0.0.0" || host == "::" {
		host = ""
	}
	return host, port, nil
}

func loadRoots(path string) (*x509.CertPool, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxRootsFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxRootsFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxRootsFileBytes)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: %w", path, ErrNoCertificates)
	}
	return pool, nil
}

// credentialAges is the age metric's input for one prefix: sets without a known creation
// time are left out (config warned about them).
func credentialAges(p config.Prefix) []certs.CredentialAge {
	out := make([]certs.CredentialAge, 0, len(p.Credential))
	for _, c := range p.Credential {
		if !c.Created.IsZero() {
			out = append(out, certs.CredentialAge{AccessKeyID: c.AccessKeyID, Created: c.Created.Time})
		}
	}
	return out
}
