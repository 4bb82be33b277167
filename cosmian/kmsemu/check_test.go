package kmsemu_test

import (
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// A ckms client file checked as the proxy checks it at start-up: the server's release and who
// the file's token is to it; a wrong token, or a file that points at the wrong port, is named in
// the error together with its server_url and what to look at.
func TestCKMSCheck(t *testing.T) {
	emu, err := kmsemu.New(kmsemu.Config{CosmianVersion: kmsemu.Cosmian526, Tokens: map[string]string{ownerTok: "owner@acme.com"}})
	if err != nil {
		t.Fatal(err)
	}
	run, err := emu.Start("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run.Close() })
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: run.Cert.Raw})
	dir := t.TempDir()
	client := func(name, url, tok string) *cosmian.Client {
		t.Helper()
		p := filepath.Join(dir, name)
		body := fmt.Sprintf("[http_config]\nserver_url = %q\naccess_token = %q\nverified_cert = %q\n", url, tok, cert)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		ck, err := cosmian.LoadCKMSConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := ck.ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		cc.Timeout = 2 * time.Second
		c, err := cosmian.NewClient(cc)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	id, err := client("good.toml", run.URL, ownerTok).Check(ctx)
	if err != nil || id.User != "owner@acme.com" || !strings.HasPrefix(id.Version, "5.26") {
		t.Fatalf("good file: %+v %v", id, err)
	}
	_, err = client("wrong-token.toml", run.URL, "another-servers-token").Check(ctx)
	if err == nil {
		t.Fatal("a wrong token passed the check")
	}
	for _, w := range []string{"wrong-token.toml", run.URL, "access_token", "does not accept this client's credential"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("wrong token: error lacks %q: %v", w, err)
		}
	}
	if strings.Contains(err.Error(), "another-servers-token") {
		t.Error("the token is in the error")
	}
	_, err = client("wrong-port.toml", "https://127.0.0.1:1", ownerTok).Check(ctx)
	for _, w := range []string{"wrong-port.toml", "https://127.0.0.1:1", "server_url"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("wrong port: error lacks %q: %v", w, err)
		}
	}
	// Every KMIP error of the client names the file.
	_, err = client("good.toml", run.URL, ownerTok).GetAttributes(ctx, "no-such-key")
	if err == nil || !strings.Contains(err.Error(), "good.toml") {
		t.Errorf("a KMIP error without the file: %v", err)
	}
}
