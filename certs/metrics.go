package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names exported by this package.
const (
	MetricCertificateExpirySeconds = "xks_tls_certificate_expiry_seconds"
	MetricCertificateReloads       = "xks_tls_certificate_reloads_total"
	MetricCredentialAgeSeconds     = "xks_sigv4_credential_age_seconds"
)

// MaxCredentialsPerPrefix bounds the access_key_id label: a prefix normally
// has two credential sets (current and next during a rotation).
const MaxCredentialsPerPrefix = 16

// Source label values.
const (
	sourceFiles      = "files"
	sourceACME       = "acme"
	sourceSelfSigned = "self-signed"
)

// Metrics holds the certificate and credential health metrics. A nil
// *Metrics is valid and records nothing.
//
// The two gauges are computed at scrape time from the stored NotAfter and
// creation times, so they never go stale between reloads.
type Metrics struct {
	now     func() time.Time
	reloads *prometheus.CounterVec

	expiryDesc *prometheus.Desc
	credDesc   *prometheus.Desc

	mu    sync.Mutex
	certs map[certKey]func() *x509.Certificate // the served leaf, read at scrape time
	creds map[string][]CredentialAge
}

type certKey struct{ source, domain string }

// CredentialAge names one SigV4 credential set and when it was created. The
// access key id is not secret (AWS shows it in the console); the secret never
// comes here.
type CredentialAge struct {
	AccessKeyID string
	Created     time.Time
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, useful in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		now: time.Now,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricCertificateReloads,
			Help: "Server certificate loads after start (file change, SIGHUP, ACME renewal) by source and result (success|failure).",
		}, []string{"source", "result"}),
		expiryDesc: prometheus.NewDesc(MetricCertificateExpirySeconds,
			"Seconds until NotAfter of the served server certificate (AWS: XksProxyCertificateDaysToExpire).",
			[]string{"source", "domain"}, nil),
		credDesc: prometheus.NewDesc(MetricCredentialAgeSeconds,
			"Seconds since each SigV4 credential set was created (AWS: XksProxyCredentialAge). At most 16 per prefix.",
			[]string{"prefix", "access_key_id"}, nil),
		certs: make(map[certKey]func() *x509.Certificate),
		creds: make(map[string][]CredentialAge),
	}
	if reg != nil {
		reg.MustRegister(m.reloads, m)
	}
	return m
}

// SetNow replaces the clock used for the computed gauges (tests).
func (m *Metrics) SetNow(now func() time.Time) {
	if m == nil || now == nil {
		return
	}
	m.mu.Lock()
	m.now = now
	m.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.expiryDesc
	ch <- m.credDesc
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for k, leaf := range m.certs {
		l := leaf()
		if l == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(m.expiryDesc, prometheus.GaugeValue,
			l.NotAfter.Sub(now).Seconds(), k.source, k.domain)
	}
	for prefix, creds := range m.creds {
		for _, c := range creds {
			ch <- prometheus.MustNewConstMetric(m.credDesc, prometheus.GaugeValue,
				now.Sub(c.Created).Seconds(), prefix, c.AccessKeyID)
		}
	}
}

// ErrTooManyCredentials is returned by SetCredentialAges beyond
// MaxCredentialsPerPrefix sets.
var ErrTooManyCredentials = errors.New("certs: too many credential sets for one prefix")

// SetCredentialAges replaces the credential sets reported for prefix (an
// empty list removes the prefix). Call it at start and after every credential
// reload so removed sets disappear from the metric.
func (m *Metrics) SetCredentialAges(prefix string, creds []CredentialAge) error {
	if m == nil {
		return nil
	}
	if len(creds) > MaxCredentialsPerPrefix {
		return fmt.Errorf("%w: prefix %q has %d (max %d)", ErrTooManyCredentials, prefix, len(creds), MaxCredentialsPerPrefix)
	}
	for _, c := range creds {
		if c.AccessKeyID == "" || c.Created.IsZero() {
			return fmt.Errorf("certs: credential age for prefix %q needs an access key id and a creation time", prefix)
		}
	}
	cp := append([]CredentialAge(nil), creds...)
	sort.Slice(cp, func(i, j int) bool { return cp[i].AccessKeyID < cp[j].AccessKeyID })
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(cp) == 0 {
		delete(m.creds, prefix)
		return nil
	}
	m.creds[prefix] = cp
	return nil
}

// setLeaf records a fixed leaf for a source (nil removes it).
func (m *Metrics) setLeaf(source, domain string, leaf *x509.Certificate) {
	if leaf == nil {
		m.setLeafFunc(source, domain, nil)
		return
	}
	m.setLeafFunc(source, domain, func() *x509.Certificate { return leaf })
}

// setLeafFunc records how to read the leaf a source serves for domain (nil
// removes it); the function is called at every scrape.
func (m *Metrics) setLeafFunc(source, domain string, leaf func() *x509.Certificate) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := certKey{source, domain}
	if leaf == nil {
		delete(m.certs, k)
		return
	}
	m.certs[k] = leaf
}

func (m *Metrics) reloaded(source string, err error) {
	if m == nil {
		return
	}
	result := "success"
	if err != nil {
		result = "failure"
	}
	m.reloads.WithLabelValues(source, result).Inc()
}

// leafDomain is the domain label for a leaf: its first DNS SAN, else its CN.
func leafDomain(leaf *x509.Certificate) string {
	if leaf == nil {
		return ""
	}
	if len(leaf.DNSNames) > 0 {
		return leaf.DNSNames[0]
	}
	return leaf.Subject.CommonName
}
