package certs

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// maxPEMFileBytes bounds what we read from a certificate or key file.
const maxPEMFileBytes = 1 << 20

// FilesConfig configures a Files source.
type FilesConfig struct {
	CertFile string // PEM: leaf first, then intermediates
	KeyFile  string // PEM private key (PKCS#1, PKCS#8 or SEC 1)
	// PollInterval is how often Run checks the files for changes (default 30s).
	PollInterval time.Duration
	Logger       *slog.Logger
	Metrics      *Metrics
	Now          func() time.Time
}

// CheckAndSetDefaults validates c and fills defaults.
func (c *FilesConfig) CheckAndSetDefaults() error {
	if c.CertFile == "" || c.KeyFile == "" {
		return errors.New("certs: files mode needs cert_file and key_file")
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Files serves a certificate loaded from PEM files and reloads it when the
// files change (Run) or on demand (Reload, wired to SIGHUP). A replacement
// that does not load keeps the current certificate.
type Files struct {
	cfg FilesConfig
	cur atomic.Pointer[tls.Certificate]

	mu        sync.Mutex // serialises reloads and guards the fields below
	stamp     fileStamp  // stat of both files at the last attempt
	loadedSum [32]byte   // digest of the contents currently served
	failedSum [32]byte   // digest of the last contents that failed (log once)
}

type fileStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// NewFiles loads the certificate once; the error names the file at fault.
func NewFiles(cfg FilesConfig) (*Files, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	f := &Files{cfg: cfg}
	stamp, _ := f.statFiles()
	certPEM, keyPEM, err := f.readFiles()
	if err != nil {
		return nil, err
	}
	cert, err := f.parse(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	f.checkKeyPerm()
	f.stamp = stamp
	f.loadedSum = digest(certPEM, keyPEM)
	clear(keyPEM)
	f.install(cert)
	return f, nil
}

// TLSConfig implements Source.
func (f *Files) TLSConfig() *tls.Config { return baseTLSConfig(f.GetCertificate) }

// GetCertificate returns the current certificate (tls.Config.GetCertificate).
func (f *Files) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.cur.Load(), nil
}

// Leaf returns the parsed leaf currently served.
func (f *Files) Leaf() *x509.Certificate { return f.cur.Load().Leaf }

// Reload re-reads both files now (SIGHUP). On error the current certificate
// stays in service and the error says why.
func (f *Files) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	stamp, _ := f.statFiles()
	return f.reloadLocked(stamp, true)
}

// Run polls the files every PollInterval and reloads them when their size,
// modification time or contents change. It returns nil when ctx is done.
func (f *Files) Run(ctx context.Context) error {
	t := time.NewTicker(f.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			f.poll()
		}
	}
}

func (f *Files) poll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	stamp, err := f.statFiles()
	if err != nil || stamp == f.stamp {
		// A missing file is usually a rename in progress (certbot,
		// cert-manager symlink swaps): try again at the next tick.
		return
	}
	_ = f.reloadLocked(stamp, false)
}

// reloadLocked loads the files; explicit reloads always report, polls report
// a given bad content only once.
func (f *Files) reloadLocked(stamp fileStamp, explicit bool) error {
	certPEM, keyPEM, err := f.readFiles()
	if err != nil {
		f.failed(err, [32]byte{}, explicit)
		return err
	}
	defer clear(keyPEM)
	sum := digest(certPEM, keyPEM)
	if sum == f.loadedSum {
		f.stamp = stamp // touched but unchanged
		return nil
	}
	if !explicit && sum == f.failedSum {
		return nil // already reported
	}
	cert, err := f.parse(certPEM, keyPEM)
	if err == nil {
		now := f.cfg.Now()
		if cur := f.cur.Load(); now.After(cert.Leaf.NotAfter) && cur != nil && now.Before(cur.Leaf.NotAfter) {
			err = fmt.Errorf("certs: %s: new certificate expired at %s; keeping the current one (expires %s)",
				f.cfg.CertFile, cert.Leaf.NotAfter.UTC().Format(time.RFC3339), cur.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	if err != nil {
		f.failed(err, sum, explicit)
		return err
	}
	f.checkKeyPerm()
	f.stamp = stamp
	f.loadedSum = sum
	f.failedSum = [32]byte{}
	f.install(cert)
	f.cfg.Metrics.reloaded(sourceFiles, nil)
	f.cfg.Logger.Info("tls certificate reloaded", "cert_file", f.cfg.CertFile,
		"domain", leafDomain(cert.Leaf), "not_after", cert.Leaf.NotAfter.UTC())
	return nil
}

func (f *Files) failed(err error, sum [32]byte, explicit bool) {
	if !explicit && sum != ([32]byte{}) {
		f.failedSum = sum
	}
	f.cfg.Metrics.reloaded(sourceFiles, err)
	f.cfg.Logger.Error("tls certificate reload failed; still serving the previous certificate", "error", err)
}

func (f *Files) install(cert *tls.Certificate) {
	old := f.cur.Swap(cert)
	if old != nil && leafDomain(old.Leaf) != leafDomain(cert.Leaf) {
		f.cfg.Metrics.setLeaf(sourceFiles, leafDomain(old.Leaf), nil)
	}
	f.cfg.Metrics.setLeafFunc(sourceFiles, leafDomain(cert.Leaf), f.Leaf)
}

func (f *Files) statFiles() (fileStamp, error) {
	var s fileStamp
	ci, err := os.Stat(f.cfg.CertFile)
	if err != nil {
		return s, err
	}
	ki, err := os.Stat(f.cfg.KeyFile)
	if err != nil {
		return s, err
	}
	return fileStamp{ci.ModTime(), ki.ModTime(), ci.Size(), ki.Size()}, nil
}

func (f *Files) readFiles() (certPEM, keyPEM []byte, err error) {
	certPEM, err = readBounded(f.cfg.CertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: reading certificate file %s: %w", f.cfg.CertFile, err)
	}
	keyPEM, err = readBounded(f.cfg.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: reading key file %s: %w", f.cfg.KeyFile, err)
	}
	return certPEM, keyPEM, nil
}

func (f *Files) parse(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	cert, err := ParseKeyPair(certPEM, keyPEM)
	if err != nil {
		// tls.X509KeyPair's messages never include key bytes.
		return nil, fmt.Errorf("certs: %s / %s: %w", f.cfg.CertFile, f.cfg.KeyFile, err)
	}
	return cert, nil
}

// checkKeyPerm warns when the private key is readable by group or others.
func (f *Files) checkKeyPerm() {
	if fi, err := os.Stat(f.cfg.KeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		f.cfg.Logger.Warn("tls key file is readable by group or others; use mode 0600 or 0640",
			"key_file", f.cfg.KeyFile, "mode", fi.Mode().Perm().String())
	}
}

// ParseKeyPair parses a PEM certificate chain and its private key, checks
// that they match, and fills Leaf.
func ParseKeyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, err
		}
		cert.Leaf = leaf
	}
	return &cert, nil
}

func readBounded(name string) ([]byte, error) {
	fh, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxPEMFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPEMFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxPEMFileBytes)
	}
	return b, nil
}

func digest(certPEM, keyPEM []byte) [32]byte {
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}
