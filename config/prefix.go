package config

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// Timestamp is a point in time written as RFC 3339 ("2026-01-15T00:00:00Z"), a date
// ("2026-01-15", midnight UTC), or the TOML datetime/date of either.
type Timestamp struct{ time.Time }

// UnmarshalText parses RFC 3339 or a bare date.
func (ts *Timestamp) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		ts.Time = t.UTC()
		return nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		ts.Time = t
		return nil
	}
	return fmt.Errorf("not an RFC 3339 date (want e.g. \"2026-01-15T00:00:00Z\" or \"2026-01-15\")")
}

// MarshalText writes RFC 3339.
func (ts Timestamp) MarshalText() ([]byte, error) { return []byte(ts.UTC().Format(time.RFC3339)), nil }

// Prefix is one [[prefix]].
type Prefix struct {
	Path       string       `toml:"path"`
	Region     string       `toml:"region"`
	Service    string       `toml:"service"`
	Credential []Credential `toml:"credential"`
}

// Credential is one [[prefix.credential]]; Secret is resolved from whichever source was given.
type Credential struct {
	AccessKeyID         string `toml:"access_key_id"`
	SecretAccessKey     string `toml:"secret_access_key"`
	SecretAccessKeyFile string `toml:"secret_access_key_file"`
	SecretAccessKeyEnv  string `toml:"secret_access_key_env"`
	// Created is when the set was issued: the configured date, else the secret file's
	// modification time, else zero (no age metric for this set).
	Created Timestamp `toml:"created"`
}

// Credentials returns the prefix's credential sets as sigv4 credentials.
func (p Prefix) Credentials() []sigv4.Credential {
	out := make([]sigv4.Credential, len(p.Credential))
	for i, c := range p.Credential {
		out[i] = sigv4.Credential{AccessKeyID: c.AccessKeyID, Secret: c.SecretAccessKey}
	}
	return out
}

// prefixes checks every [[prefix]] and its credential sets.
func (c *checker) prefixes(prefixes []Prefix) {
	if len(prefixes) == 0 {
		c.fail("prefix", "at least one [[prefix]] is required")
	}
	seenPrefix := map[string]int{}
	for i := range prefixes {
		p := &prefixes[i]
		fp := fmt.Sprintf("prefix[%d]", i)
		c.xksRule(fp+".path", xks.ValidPrefix(p.Path))
		if j, dup := seenPrefix[p.Path]; dup {
			c.fail(fp+".path", "same path as prefix[%d]", j)
		}
		seenPrefix[p.Path] = i
		c.scopePart(fp+".region", p.Region, true)
		c.scopePart(fp+".service", p.Service, false)
		if len(p.Credential) == 0 || len(p.Credential) > sigv4.MaxCredentials {
			c.fail(fp+".credential", "need 1 to %d [[prefix.credential]] sets", sigv4.MaxCredentials)
		}
		seen := map[string]int{}
		for k := range p.Credential {
			cr := &p.Credential[k]
			fc := fmt.Sprintf("%s.credential[%d]", fp, k)
			cr.SecretAccessKey = c.secret(fc, "secret_access_key", cr.SecretAccessKey, cr.SecretAccessKeyFile, cr.SecretAccessKeyEnv, true)
			c.credential(fc, cr.AccessKeyID, cr.SecretAccessKey)
			c.created(fc, cr)
			if j, dup := seen[cr.AccessKeyID]; dup {
				c.fail(fc+".access_key_id", "same access key id as credential[%d]", j)
			}
			seen[cr.AccessKeyID] = k
		}
	}
}

// created fills cr.Created: the configured date, else the secret file's modification time
// (rotation writes a new file), else zero with a warning: the set then has no age series.
func (c *checker) created(field string, cr *Credential) {
	if !cr.Created.IsZero() {
		if cr.Created.After(time.Now().Add(24 * time.Hour)) {
			c.fail(field+".created", "is in the future")
		}
		return
	}
	if cr.SecretAccessKeyFile != "" {
		if st, err := os.Stat(c.rel(cr.SecretAccessKeyFile)); err == nil {
			cr.Created = Timestamp{st.ModTime().UTC()}
			return
		}
		return // the read error is reported by secret()
	}
	c.warn(field+".created", "not set and the secret is not from a file: xks_sigv4_credential_age_seconds has no series for %s", cr.AccessKeyID)
}

// scopePart checks a SigV4 region or service with sigv4's rule.
func (c *checker) scopePart(field, s string, required bool) {
	switch {
	case s == "" && required:
		c.fail(field, "required")
	case s != "" && !sigv4.ValidScopePart(s):
		c.fail(field, "must be 1 to 64 characters of a-z 0-9 - _ .")
	}
}

func (c *checker) credential(field, akid, secret string) {
	if akid == "" {
		c.fail(field+".access_key_id", "required")
		return
	}
	if secret == "" {
		return // already reported by secret()
	}
	if err := (sigv4.Credential{AccessKeyID: akid, Secret: secret}).Validate(); err != nil {
		// Validate's message names the field and never echoes the secret.
		what := ".secret_access_key"
		if strings.Contains(err.Error(), "access key id must") {
			what = ".access_key_id"
		}
		c.fail(field+what, "%s", strings.TrimPrefix(err.Error(), sigv4.ErrInvalidCredential.Error()+": "))
	}
}
