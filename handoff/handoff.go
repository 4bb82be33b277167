// Package handoff checks, before an operator moves AWS's external key store endpoint from the
// proxy to a Cosmian server itself, that the server answers the XKS API directly as AWS will call
// it: the same URI path, AWS's SigV4 credential, every key the proxy serves. AWS lets the URI
// path and the credential change while the key store stays CONNECTED (never the endpoint: that is
// a DNS move), so a handoff has no outage when this check passes first.
package handoff

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// DefaultPrincipal is the awsPrincipalArn the check sends when none is given. A Cosmian 5.26
// server answers a key only to a principal it grants (Config.Principal).
const DefaultPrincipal = "arn:aws:iam::000000000000:role/xksproxy-handoff-check"

// Config is one check.
type Config struct {
	// Backend names the Cosmian server in the report.
	Backend string
	// XKSURL is where the proxy reaches the server's XKS API ("https://kms-b:9998/aws"); its
	// path is the one AWS must use after the handoff (Cosmian serves XKS at /aws only).
	XKSURL string
	TLS    *tls.Config // trusts the server; nil: the system roots
	// Path is the URI path prefix AWS uses today (the proxy's [[prefix]] path, "/aws").
	Path            string
	Region, Service string
	// Credentials are the sets AWS may sign with today (the prefix's); the server must accept
	// at least one, or AWS's credential must change to one the server accepts first.
	Credentials []sigv4.Credential
	// Principal is sent as awsPrincipalArn (default DefaultPrincipal).
	Principal string
	// Keys are the ids AWS's keys use: every one must answer GetKeyMetadata on the server.
	Keys []string
	// Elsewhere names, for each other backend, the keys it holds: a key held elsewhere and not
	// here was not migrated (reported as such).
	Elsewhere map[string][]string
	// Timeout bounds each call (default 5s); Concurrency bounds calls at once (default 8).
	Timeout     time.Duration
	Concurrency int
}

// Report is the check's result. Ready is true only when AWS could be pointed at the server now.
type Report struct {
	Backend string `json:"backend"`
	// Path is the URI path AWS uses now, ServerPath the one the server answers at.
	Path       string `json:"path"`
	ServerPath string `json:"server_path"`
	// Accepted and Refused are the access key ids of the prefix's credential sets the server
	// accepts and refuses.
	Accepted []string `json:"accepted,omitempty"`
	Refused  []string `json:"refused,omitempty"`
	// Health is the server's XKS health status ("" when it could not be asked).
	Health string `json:"health,omitempty"`
	// Checked counts the keys asked; Missing those the server does not know (KeyNotFound),
	// Failed those it answered otherwise (id: error name and message), NotMigrated those
	// another backend holds and the server does not list.
	Checked     int               `json:"checked"`
	Missing     []string          `json:"missing,omitempty"`
	Failed      map[string]string `json:"failed,omitempty"`
	NotMigrated map[string]string `json:"not_migrated,omitempty"` // id → the backend that holds it
	Ready       bool              `json:"ready"`
	// Steps says what to do, in order.
	Steps []string `json:"steps"`
}

// serverPath is the path prefix of an XKS URL ("https://h:9998/aws" → "/aws").
func serverPath(xksURL string) (string, error) {
	u, err := url.Parse(xksURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("handoff: XKS URL %q: want https://host:port/prefix", xksURL)
	}
	return strings.TrimSuffix(u.Path, "/"), nil
}

// Check runs the check. An error is returned only when the check could not run at all; every
// finding is in the report.
func Check(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Principal == "" {
		cfg.Principal = DefaultPrincipal
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if len(cfg.Credentials) == 0 {
		return nil, errors.New("handoff: the prefix has no credential set")
	}
	sp, err := serverPath(cfg.XKSURL)
	if err != nil {
		return nil, err
	}
	rep := &Report{Backend: cfg.Backend, Path: cfg.Path, ServerPath: sp, Failed: map[string]string{}, NotMigrated: map[string]string{}}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg.TLS, Proxy: nil, MaxIdleConnsPerHost: cfg.Concurrency}}
	defer hc.CloseIdleConnections()
	base := strings.TrimSuffix(cfg.XKSURL, "/") + xks.APIPathSuffix
	var client *xks.Client
	for _, cred := range cfg.Credentials {
		c, err := newClient(base, hc, cred, cfg)
		if err != nil {
			return nil, err
		}
		h, err := c.Health(ctx, xks.RequestMetadata{KMSRequestID: "xksproxy-handoff-check", KMSOperation: "KmsHealthCheck"})
		switch {
		case err == nil:
			rep.Accepted = append(rep.Accepted, cred.AccessKeyID)
			if client == nil {
				client = c
				rep.Health = worst(h)
			}
		case xks.NameOf(err) == xks.AuthenticationFailedException:
			rep.Refused = append(rep.Refused, cred.AccessKeyID)
		default:
			return nil, fmt.Errorf("handoff: %s does not answer GetHealthStatus at %s: %w", cfg.Backend, base, err)
		}
	}
	if client != nil {
		var mu sync.Mutex
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(cfg.Concurrency)
		for _, id := range cfg.Keys {
			g.Go(func() error {
				md := xks.RequestMetadata{AWSPrincipalArn: cfg.Principal, KMSOperation: "DescribeKey",
					KMSRequestID: "xksproxy-handoff-check", KMSKeyArn: "arn:aws:kms:" + cfg.Region + ":000000000000:key/handoff-check"}
				_, err := client.Metadata(gctx, id, md)
				mu.Lock()
				defer mu.Unlock()
				rep.Checked++
				switch n := xks.NameOf(err); {
				case err == nil:
				case n == xks.KeyNotFoundException:
					rep.Missing = append(rep.Missing, id)
				default:
					rep.Failed[id] = truncate(err.Error())
				}
				return gctx.Err()
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
	}
	here := map[string]bool{}
	for _, id := range cfg.Keys {
		here[id] = true
	}
	for other, ids := range cfg.Elsewhere {
		for _, id := range ids {
			if !here[id] {
				rep.NotMigrated[id] = other
			}
		}
	}
	sort.Strings(rep.Missing)
	rep.steps(cfg)
	return rep, nil
}

func newClient(base string, hc *http.Client, cred sigv4.Credential, cfg Config) (*xks.Client, error) {
	s, err := sigv4.NewSigner(sigv4.SignerConfig{Credential: cred, Region: cfg.Region, Service: cfg.Service})
	if err != nil {
		return nil, fmt.Errorf("handoff: credential %s: %w", cred.AccessKeyID, err)
	}
	return xks.NewClient(xks.ClientConfig{BaseURL: base, HTTP: hc, Signer: s, Timeout: cfg.Timeout})
}

// worst is the least healthy status of a health reply's key managers.
func worst(h *xks.HealthResponse) string {
	st := xks.HealthActive
	for _, d := range h.EkmFleetDetails {
		switch {
		case d.HealthStatus == xks.HealthUnavailable:
			return d.HealthStatus
		case d.HealthStatus == xks.HealthDegraded:
			st = d.HealthStatus
		}
	}
	return st
}

// steps says whether the server is ready and what to do.
func (r *Report) steps(cfg Config) {
	store := "<custom-key-store-id>"
	var blockers []string
	if len(r.Accepted) == 0 {
		blockers = append(blockers, fmt.Sprintf("configure %s to accept AWS's credential (Cosmian: aws_xks_sigv4_access_key_id = %q and its secret in [aws_xks_config]), or first rotate AWS to a credential %s accepts: add it to the proxy's [[prefix.credential]] (SIGHUP), then aws kms update-custom-key-store --custom-key-store-id %s --xks-proxy-authentication-credential AccessKeyId=…,RawSecretAccessKey=… (allowed while CONNECTED; allow up to five minutes)",
			r.Backend, cfg.Credentials[0].AccessKeyID, r.Backend, store))
	}
	if len(r.Missing) > 0 {
		blockers = append(blockers, fmt.Sprintf("%d key(s) are unknown to %s through XKS (%s): migrate them, or on Cosmian 5.26 grant principal %s on them (pass --principal with an ARN your applications use)",
			len(r.Missing), r.Backend, list(r.Missing), cfg.Principal))
	}
	if len(r.Failed) > 0 {
		ids := slices.Sorted(mapKeys(r.Failed))
		blockers = append(blockers, fmt.Sprintf("%d key(s) answered with an error on %s: %s (first: %s)", len(ids), r.Backend, list(ids), r.Failed[ids[0]]))
	}
	if len(r.NotMigrated) > 0 {
		ids := slices.Sorted(mapKeys(r.NotMigrated))
		blockers = append(blockers, fmt.Sprintf("%d key(s) held by another backend are not on %s (%s): finish the migration first", len(ids), r.Backend, list(ids)))
	}
	if r.Health == xks.HealthUnavailable {
		blockers = append(blockers, r.Backend+" reports itself UNAVAILABLE")
	}
	r.Ready = len(blockers) == 0
	if !r.Ready {
		r.Steps = blockers
		return
	}
	path := r.ServerPath + xks.APIPathSuffix
	if r.ServerPath != r.Path {
		r.Steps = append(r.Steps, fmt.Sprintf("aws kms update-custom-key-store --custom-key-store-id %s --xks-proxy-uri-path %s (allowed while CONNECTED; the proxy keeps answering %s%s meanwhile)",
			store, path, r.Path, xks.APIPathSuffix))
	}
	if len(r.Refused) > 0 {
		r.Steps = append(r.Steps, fmt.Sprintf("remove the credential sets %s does not accept from AWS's configuration first: AWS must sign with %s", r.Backend, strings.Join(r.Accepted, " or ")))
	}
	r.Steps = append(r.Steps,
		"point the endpoint's DNS name at "+r.Backend+" (same name and certificate: AWS's endpoint never changes); keep the proxy running until the old records expire",
		"watch the key store's connection state and the XKS error metrics in CloudWatch; to go back, point DNS at the proxy again")
}

func list(ids []string) string {
	if len(ids) > 5 {
		return strings.Join(ids[:5], ", ") + fmt.Sprintf(", … %d more", len(ids)-5)
	}
	return strings.Join(ids, ", ")
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// Lister is the part of a Cosmian KMIP client (as the keys' owner) that ListKeys uses.
type Lister interface {
	Locate(ctx context.Context, r cosmian.LocateRequest) ([]string, error)
	Owned(ctx context.Context) ([]cosmian.OwnedObject, error)
	GetAttributes(ctx context.Context, uid string) (*cosmian.KeyAttributes, error)
}

// ListKeys lists the keys carrying tag on a server, as its keys' owner: the XKS keys AWS's keys
// use. The proxy's own objects (their owner-only tags) are left out, and so are the ids in skip
// (the health-check keys).
func ListKeys(ctx context.Context, k Lister, tag string, skip []string) ([]string, error) {
	ids, err := k.Locate(ctx, cosmian.LocateRequest{Tags: []string{tag}, ObjectType: "SymmetricKey"})
	if errors.Is(err, cosmian.ErrLocateIncomplete) {
		// Cosmian up to 5.26 stops Locate at 1000: list what the owner owns and read the tags.
		var objs []cosmian.OwnedObject
		if objs, err = k.Owned(ctx); err == nil {
			ids = ids[:0]
			for _, o := range objs {
				a, aerr := k.GetAttributes(ctx, o.ObjectID)
				if aerr != nil {
					if errors.Is(aerr, cosmian.ErrNotFound) {
						continue
					}
					return nil, aerr
				}
				if slices.Contains(a.Tags, tag) {
					ids = append(ids, o.ObjectID)
				}
			}
		}
	}
	if err != nil {
		return nil, err
	}
	out := ids[:0]
	for _, id := range ids {
		if slices.Contains(skip, id) {
			continue
		}
		if strings.HasPrefix(id, "xksproxy-") {
			a, err := k.GetAttributes(ctx, id)
			if err != nil && !errors.Is(err, cosmian.ErrNotFound) {
				return nil, err
			}
			if a == nil || cutover.IsOwnObject(a.Tags) {
				continue
			}
		}
		out = append(out, id)
	}
	sort.Strings(out)
	return slices.Compact(out), nil
}
