package kmsemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

func TestFaults(t *testing.T) {
	s, err := New(Config{XKS: &XKSConfig{Region: testRegion, AccessKeyID: testAKID, SecretAccessKey: testSecret}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey("admin", "k1", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	e := newEnvFrom(t, s)
	health := []byte(`{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"KmsHealthCheck"}}`)
	locate := []byte(`{"tag":"Locate","value":[{"tag":"Attributes","value":[]}]}`)

	t.Run("error rate", func(t *testing.T) {
		s.SetFaults(Faults{ErrorRate: 1})
		defer s.SetFaults(Faults{})
		wantXKSError(t, e.send(e.xksRequest("/aws/kms/xks/v1/health", health, signAWSKMS, time.Now())), 500, "InternalException", "injected")
		if r := e.kmip("", locate); r.status != 500 || string(r.body) != "Internal server error" || r.ctype != "text/html; charset=utf-8" {
			t.Fatalf("kmip: %d %q %s", r.status, r.ctype, r.body)
		}
		s.SetFaults(Faults{ErrorRate: 1, XKSOnly: true})
		if r := e.kmip("", locate); r.status != 200 {
			t.Fatalf("XKSOnly must spare KMIP: %d", r.status)
		}
		s.SetFaults(Faults{ErrorRate: 1, KMIPOnly: true})
		if r := e.send(e.xksRequest("/aws/kms/xks/v1/health", health, signAWSKMS, time.Now())); r.status != 200 {
			t.Fatalf("KMIPOnly must spare XKS: %d %s", r.status, r.body)
		}
		if got := s.Faults(); !got.KMIPOnly || got.ErrorRate != 1 {
			t.Fatalf("Faults() = %+v", got)
		}
	})
	t.Run("latency", func(t *testing.T) {
		s.SetFaults(Faults{Latency: time.Minute})
		defer s.SetFaults(Faults{})
		c := &http.Client{Timeout: 200 * time.Millisecond}
		req, _ := http.NewRequest(http.MethodPost, e.url+"/kmip/2_1", bytes.NewReader(locate))
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			t.Fatal("a one-minute latency must outlast a 200 ms client timeout")
		}
		s.SetFaults(Faults{})
		if r := e.kmip("", locate); r.status != 200 {
			t.Fatalf("after latency removed: %d", r.status)
		}
	})
	t.Run("down", func(t *testing.T) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		post := func() error {
			resp, err := c.Post(e.url+"/kmip/2_1", "application/json", bytes.NewReader(locate))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}
		if err := post(); err != nil { // opens a keep-alive connection
			t.Fatal(err)
		}
		s.SetFaults(Faults{Down: true})
		for i := 0; i < 3; i++ { // the kept-alive connection was dropped; new ones are refused
			if err := post(); err == nil {
				t.Fatal("request succeeded while Down")
			}
		}
		s.SetFaults(Faults{})
		if err := post(); err != nil {
			t.Fatalf("after Down cleared: %v", err)
		}
		// Down scoped to XKS answers by dropping the connection, KMIP still works.
		s.SetFaults(Faults{Down: true, XKSOnly: true})
		defer s.SetFaults(Faults{})
		if _, err := c.Do(e.xksRequest("/aws/kms/xks/v1/health", health, signAWSKMS, time.Now())); err == nil {
			t.Fatal("XKS request succeeded while XKS is down")
		}
		if err := post(); err != nil {
			t.Fatalf("KMIP while XKS is down: %v", err)
		}
	})
	if st := s.Stats(); st.Errors == 0 || st.XKS["health"] == 0 || st.KMIP["Locate"] == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAccessAPI(t *testing.T) {
	e := authEnv(t, Cosmian526)
	e.kmipOK(ownerToken, createReq("a1", DefaultUsageMask, nil))
	tests := []struct {
		name   string
		token  string
		path   string
		body   string
		status int
		want   string
	}{
		{"grant", ownerToken, "/access/grant", `{"unique_identifier":"a1","user_id":"bob","operation_types":["getattributes","encrypt","decrypt"]}`, 200, `{"success":"Access for bob successfully added"}`},
		{"grant star", ownerToken, "/access/grant", `{"unique_identifier":"a1","user_id":"*","operation_types":["get"]}`, 200, `{"success":"Access for * successfully added"}`},
		{"revoke", ownerToken, "/access/revoke", `{"unique_identifier":"a1","user_id":"*","operation_types":["get"]}`, 200, `{"success":"Access for * successfully deleted"}`},
		{"non-owner grant", userToken, "/access/grant", `{"unique_identifier":"a1","user_id":"bob","operation_types":["get"]}`, 401, "Access denied: Object with uid `a1` is not owned by owner `user.client@acme.com`"},
		{"self grant", ownerToken, "/access/grant", `{"unique_identifier":"a1","user_id":"owner.client@acme.com","operation_types":["get"]}`, 401, "Access denied: You can't grant yourself, you have already all rights on your own objects"},
		{"unknown op", ownerToken, "/access/grant", `{"unique_identifier":"a1","user_id":"bob","operation_types":["get_attributes"]}`, 400, "Json deserialize error: unknown variant `get_attributes`"},
		{"missing user", ownerToken, "/access/grant", `{"unique_identifier":"a1","operation_types":["get"]}`, 400, "Json deserialize error: missing field `user_id`"},
		{"create only needs no uid", ownerToken, "/access/grant", `{"user_id":"bob","operation_types":["create"]}`, 200, `{"success":"Access for bob successfully added"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(http.MethodPost, tc.path, tc.token, "application/json", []byte(tc.body))
			if r.status != tc.status || !strings.HasPrefix(string(r.body), tc.want) {
				t.Fatalf("got %d %s", r.status, r.body)
			}
		})
	}
	if r := e.do(http.MethodPost, "/access/grant", ownerToken, "text/plain", []byte(`{}`)); r.status != 400 || string(r.body) != "Content type error" {
		t.Fatalf("content type: %d %s", r.status, r.body)
	}
	r := e.do(http.MethodGet, "/access/list/a1", ownerToken, "", nil)
	if r.status != 200 || string(r.body) != `[{"user_id":"bob","operations":["decrypt","encrypt","getattributes"]}]` {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	if r := e.do(http.MethodGet, "/access/list/a1", userToken, "", nil); r.status != 401 || !strings.HasPrefix(string(r.body), "Access denied: Object with uid `a1` is not owned") {
		t.Fatalf("list by non-owner: %d %s", r.status, r.body)
	}
	var owned []struct {
		ObjectID string `json:"object_id"`
		State    string `json:"state"`
	}
	r = e.do(http.MethodGet, "/access/owned", ownerToken, "", nil)
	if err := json.Unmarshal(r.body, &owned); err != nil || len(owned) != 1 || owned[0].ObjectID != "a1" || owned[0].State != statePreActive {
		t.Fatalf("owned: %s", r.body)
	}
	e.kmipOK(ownerToken, createReq("a2", DefaultUsageMask, nil))
	if err := e.s.GrantAccess(ownerUser, "a2", userUser, "encrypt"); err != nil {
		t.Fatal(err)
	}
	r = e.do(http.MethodGet, "/access/obtained", userToken, "", nil)
	if r.status != 200 || string(r.body) != `[{"object_id":"a2","owner_id":"owner.client@acme.com","state":"PreActive","operations":["encrypt"]}]` {
		t.Fatalf("obtained: %s", r.body)
	}
	for p, want := range map[string]string{"/access/create": `{"has_create_permission":true}`, "/access/privileged": `{"has_privileged_access":false}`} {
		if r := e.do(http.MethodGet, p, userToken, "", nil); string(r.body) != want {
			t.Fatalf("%s: %s", p, r.body)
		}
	}
}

func TestConcurrency(t *testing.T) {
	e := authEnv(t, Cosmian526)
	for i := 0; i < 4; i++ {
		id := fmt.Sprintf("ck%d", i)
		if err := e.s.CreateKey("admin", id, KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
			t.Fatal(err)
		}
		if err := e.s.GrantAccess("admin", id, "*", "encrypt", "decrypt", "getattributes"); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				id := fmt.Sprintf("ck%d", (g+i)%4)
				pt := []byte(fmt.Sprintf("msg-%d-%d", g, i))
				b, _ := json.Marshal(encBody(pt, nil))
				resp, err := e.c.Do(e.xksRequest(keysPath+id+"/encrypt", b, signAWSKMS, time.Now()))
				if err != nil {
					errs <- err
					return
				}
				var o encOut
				err = json.NewDecoder(resp.Body).Decode(&o)
				resp.Body.Close()
				if err != nil {
					errs <- err
					return
				}
				b, _ = json.Marshal(decBody(o, nil))
				resp, err = e.c.Do(e.xksRequest(keysPath+id+"/decrypt", b, signAWSKMS, time.Now()))
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("decrypt status %d", resp.StatusCode)
					return
				}
				// Mutations in parallel.
				nb, _ := ttlv.Marshal(createReq(fmt.Sprintf("new-%d-%d", g, i), DefaultUsageMask, nil))
				req, _ := http.NewRequest(http.MethodPost, e.url+"/kmip/2_1", bytes.NewReader(nb))
				req.Header.Set("Authorization", "Bearer "+ownerToken)
				if resp, err = e.c.Do(req); err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				_ = e.s.GrantAccess(ownerUser, fmt.Sprintf("new-%d-%d", g, i), userUser, "get")
				_ = e.s.Objects()
				_ = e.s.Stats()
				e.s.SetFaults(Faults{})
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := len(e.s.Objects()); n != 4+16*20 {
		t.Fatalf("objects %d", n)
	}
}

// TestCorruptEncrypt: CorruptCiphertext spoils the ciphertext under a CDIV that matches it (only
// a decrypt finds it); CorruptCDIV spoils the CDIV alone.
func TestCorruptEncrypt(t *testing.T) {
	e := authEnv(t, NewestGeneration)
	if err := e.s.CreateKey("admin", "k", KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
		t.Fatal(err)
	}
	e.s.MigrateXKSAccess()
	aad := []byte("aad")
	encrypt := func() (ct, iv, tag, cdiv []byte) {
		t.Helper()
		r := e.xks(keysPath+"k/encrypt", map[string]any{"requestMetadata": meta("Encrypt"), "plaintext": base64.StdEncoding.EncodeToString([]byte("hello")),
			"encryptionAlgorithm": "AES_GCM", "additionalAuthenticatedData": base64.StdEncoding.EncodeToString(aad), "ciphertextDataIntegrityValueAlgorithm": "SHA_256"})
		var out struct{ Ciphertext, InitializationVector, AuthenticationTag, CiphertextDataIntegrityValue []byte }
		if r.status != 200 || json.Unmarshal(r.body, &out) != nil {
			t.Fatalf("encrypt %d %s", r.status, r.body)
		}
		return out.Ciphertext, out.InitializationVector, out.AuthenticationTag, out.CiphertextDataIntegrityValue
	}
	decrypts := func(ct, iv, tag []byte) bool {
		t.Helper()
		r := e.xks(keysPath+"k/decrypt", map[string]any{"requestMetadata": meta("Decrypt"), "ciphertext": ct, "initializationVector": iv,
			"authenticationTag": tag, "encryptionAlgorithm": "AES_GCM", "additionalAuthenticatedData": aad})
		return r.status == 200
	}
	formula := func(ct, iv, tag []byte) []byte {
		h := sha256.New()
		for _, b := range [][]byte{aad, iv, ct, tag} {
			h.Write(b)
		}
		return h.Sum(nil)
	}
	for _, tc := range []struct {
		fault             Corruption
		decrypts, cdivsOK bool
	}{{CorruptNothing, true, true}, {CorruptCiphertext, false, true}, {CorruptCDIV, true, false}} {
		e.s.SetFaults(Faults{CorruptEncrypt: tc.fault})
		ct, iv, tag, cdiv := encrypt()
		if got := decrypts(ct, iv, tag); got != tc.decrypts {
			t.Errorf("fault %d: decrypts %v", tc.fault, got)
		}
		if got := bytes.Equal(cdiv, formula(ct, iv, tag)); got != tc.cdivsOK {
			t.Errorf("fault %d: CDIV matches %v", tc.fault, got)
		}
	}
	e.s.SetFaults(Faults{})
}
