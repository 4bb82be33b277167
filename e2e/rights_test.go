package e2e

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/internal/devstack"
	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// Rights and keys during a migration, as an attacker and an operator would try them, over real
// TLS with both emulators on Cosmian 5.26's per-principal rules (so that a grant decides what
// each principal may do on each side).

const (
	p1 = principal                                   // holds the grants
	p2 = "arn:aws:iam::111122223333:user/p2-mallory" // holds none
)

// xksAs is a signed XKS client to the proxy that sends every request as principal.
type xksAs struct {
	c         *xks.Client
	principal string
}

func newXKSAs(t *testing.T, st *devstack.Stack, principal string) *xksAs {
	t.Helper()
	return newXKSAsAt(t, st, st.Endpoint, principal)
}

// newXKSAsAt is newXKSAs to one replica's endpoint.
func newXKSAsAt(t *testing.T, st *devstack.Stack, endpoint, principal string) *xksAs {
	t.Helper()
	s, err := sigv4.NewSigner(sigv4.SignerConfig{Credential: st.Credential, Region: st.Region})
	if err != nil {
		t.Fatal(err)
	}
	c, err := xks.NewClient(xks.ClientConfig{
		BaseURL: endpoint + st.Prefix + xks.APIPathSuffix,
		HTTP:    &http.Client{Transport: &http.Transport{TLSClientConfig: st.ClientTLS(), ForceAttemptHTTP2: true}},
		Signer:  s, Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &xksAs{c: c, principal: principal}
}

func (x *xksAs) md(op string) xks.RequestMetadata {
	return xks.RequestMetadata{AWSPrincipalArn: x.principal, KMSOperation: op, KMSRequestID: "e2e-rights",
		KMSKeyArn: "arn:aws:kms:us-east-1:111122223333:key/e2e"}
}

func (x *xksAs) createKey(ctx context.Context, id string) error {
	_, err := x.c.Metadata(ctx, id, x.md("CreateKey"))
	return err
}

func (x *xksAs) describe(ctx context.Context, id string) error {
	_, err := x.c.Metadata(ctx, id, x.md("DescribeKey"))
	return err
}

func (x *xksAs) encrypt(ctx context.Context, id string) (*xks.EncryptResponse, error) {
	return x.c.Encrypt(ctx, id, &xks.EncryptRequest{RequestMetadata: x.md("Encrypt"), Plaintext: []byte("rights e2e")})
}

func (x *xksAs) decrypt(ctx context.Context, id string, r *xks.EncryptResponse) error {
	_, err := x.c.Decrypt(ctx, id, &xks.DecryptRequest{RequestMetadata: x.md("Decrypt"), Ciphertext: r.Ciphertext,
		InitializationVector: r.InitializationVector, AuthenticationTag: r.AuthenticationTag})
	return err
}

// refusedAs asserts err is an XKS refusal named one of names (not a success, not a transport
// failure).
func refusedAs(t *testing.T, what string, err error, names ...xks.ErrorName) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: answered 200, want %v", what, names)
	}
	if n := xks.NameOf(err); !slices.Contains(names, n) {
		t.Fatalf("%s: %v, want %v", what, err, names)
	}
}

func rightsOf(srv *kmsemu.Server, id, user string) []string { return srv.Access(id)[user] }

func TestRightsDuringMigration(t *testing.T) {
	st, keys := startStack(t, 4, devstack.Config{
		CosmianA: kmsemu.Cosmian526, CosmianB: kmsemu.Cosmian526,
		Probation: testProbation(10 * time.Minute),
	})
	ctrl := st.App.Cutover
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := ctrl.Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
		t.Fatal(err)
	}
	waitState(t, st, cutover.StateSwitched, stuck...)
	asP1, asP2 := newXKSAs(t, st, p1), newXKSAs(t, st, p2)

	t.Run("grant revoked on B is refused and revoked on A", func(t *testing.T) {
		id := keys[1]
		if _, err := asP1.encrypt(ctx, id); err != nil {
			t.Fatalf("before the revocation: %v", err)
		}
		if err := st.B.RevokeAccess("admin", id, p1, cosmian.OpEncrypt, cosmian.OpDecrypt, cosmian.OpGetAttributes); err != nil {
			t.Fatal(err)
		}
		_, err := asP1.encrypt(ctx, id)
		refusedAs(t, "encrypt after the grant was revoked on B", err, xks.InvalidKeyUsageException, xks.AccessDeniedException, xks.KeyNotFoundException)
		waitFor(t, waitLong, "the revocation on A", func() bool { return len(rightsOf(st.A, id, p1)) == 0 })
		if ops := rightsOf(st.A, id, "arn:aws:iam::111122223333:user/alice"); len(ops) != 3 {
			t.Errorf("another principal's rights on A changed: %v", ops)
		}
	})

	t.Run("key revoked on B is refused and revoked on A", func(t *testing.T) {
		id := keys[2]
		if err := st.B.RevokeKey(id, "KeyCompromise"); err != nil {
			t.Fatal(err)
		}
		_, err := asP1.encrypt(ctx, id)
		refusedAs(t, "encrypt with a key revoked on B", err, xks.InvalidKeyUsageException, xks.InvalidStateException)
		waitFor(t, waitLong, "the key revoked on A", func() bool {
			o, ok := st.A.Object(id)
			return ok && o.State == cosmian.StateCompromised
		})
	})

	t.Run("CreateKey by a principal without rights splits nothing and grants nothing", func(t *testing.T) {
		// priv-2 exists on A only (made there after the switch), granted to P1.
		const id = "priv-2"
		createOnA(t, st, id)
		if err := asP2.createKey(ctx, id); err != nil {
			t.Fatalf("P2's CreateKey for an existing id: %v", err)
		}
		// And for a migrated key both sides hold (P2 must not become its "creator").
		if err := asP2.createKey(ctx, keys[0]); err != nil {
			t.Fatalf("P2's CreateKey for a migrated key: %v", err)
		}
		if _, ok := st.B.Object(id); ok {
			if eq, err := st.A.KeyMaterialEqual(id, st.B); err != nil || !eq {
				t.Fatalf("split key: %s on B is not A's key (equal=%v, err=%v)", id, eq, err)
			}
		}
		ct, err := asP1.encrypt(ctx, id)
		if err != nil {
			t.Fatalf("P1 encrypting with its key: %v", err)
		}
		if err := asP1.decrypt(ctx, id, ct); err != nil {
			t.Fatalf("P1 decrypting its data: %v", err)
		}
		_, err = asP2.encrypt(ctx, id)
		refusedAs(t, "P2 encrypting with P1's key", err, xks.InvalidKeyUsageException, xks.AccessDeniedException, xks.KeyNotFoundException)
		// Give the background copies and the rights sync time to do any harm.
		waitFor(t, waitLong, id+" copied to B", func() bool { _, ok := st.B.Object(id); return ok })
		if eq, err := st.A.KeyMaterialEqual(id, st.B); err != nil || !eq {
			t.Fatalf("split key after the copy: equal=%v, err=%v", eq, err)
		}
		for _, k := range []string{id, keys[0]} {
			for name, srv := range map[string]*kmsemu.Server{"A": st.A, "B": st.B} {
				if ops := rightsOf(srv, k, p2); len(ops) != 0 {
					t.Errorf("P2 holds %v on %s's %s", ops, name, k)
				}
			}
			if ops := rightsOf(st.A, k, p1); len(ops) != 3 {
				t.Errorf("P1's rights on A's %s: %v", k, ops)
			}
		}
	})

	t.Run("rollback refuses and names a split key", func(t *testing.T) {
		// Two different keys under one id, made on each side behind the proxy's back.
		const id = "split-1"
		createOnA(t, st, id)
		if err := st.B.CreateKey("admin", id, kmsemu.KeyOptions{UsageMask: cosmian.UsageXKS, Tags: []string{cosmian.XKSTag}}); err != nil {
			t.Fatal(err)
		}
		err := ctrl.Rollback(ctx, "try")
		if !errors.Is(err, cutover.ErrRefused) || !strings.Contains(err.Error(), id) {
			t.Fatalf("rollback with a split key: %v", err)
		}
		if s := ctrl.Status(); s.State != cutover.StateSwitched {
			t.Errorf("state %s after the refused rollback", s.State)
		}
		// Nothing was taken from P1 on A by the attempt.
		if ops := rightsOf(st.A, keys[3], p1); len(ops) != 3 {
			t.Errorf("P1's rights on A after the refused rollback: %v", ops)
		}
	})
}
