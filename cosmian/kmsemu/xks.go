package kmsemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
)

// The AWS XKS scope (crate/server/src/routes/aws_xks/*): SigV4 middleware first, then the four
// POST routes; anything else under /aws is 404 InvalidUriPathException.

const xksBase = "/aws/kms/xks/v1"

type xksError struct {
	ErrorName    string  `json:"errorName"`
	ErrorMessage *string `json:"errorMessage"`
}

func writeXKSError(w http.ResponseWriter, name, msg string) {
	writeJSON(w, xksStatus(name), xksError{ErrorName: name, ErrorMessage: &msg})
}

func (s *Server) xksFail(w http.ResponseWriter, name, msg string) {
	s.errCount.Add(1)
	writeXKSError(w, name, msg)
}

func (s *Server) serveXKS(w http.ResponseWriter, r *http.Request) {
	body, err := readAll(r)
	if err != nil {
		// Cosmian buffers the whole body for SigV4 before actix's 2 MB JSON limit applies; the
		// emulator bounds first and answers what the JSON extractor would.
		s.xksFail(w, "ValidationException", "Unknown error")
		return
	}
	if !s.checkSigV4(w, r, body) {
		return
	}
	path := r.URL.EscapedPath()
	op, keyID, ok := matchXKSRoute(path)
	if !ok || r.Method != http.MethodPost {
		s.xksFail(w, "InvalidUriPathException", "Resource not found: "+path)
		return
	}
	s.countXKS(op)
	if !jsonContentType(r) || int64(len(body)) > s.cfg.MaxBody {
		s.xksFail(w, "ValidationException", "Unknown error")
		return
	}
	switch op {
	case "health":
		s.xksHealth(w, body)
	case "metadata":
		s.xksMetadata(w, body, keyID)
	case "encrypt":
		s.xksEncrypt(w, body, keyID)
	case "decrypt":
		s.xksDecrypt(w, body, keyID)
	}
}

// matchXKSRoute returns the operation and the percent-decoded key id.
func matchXKSRoute(escapedPath string) (op, keyID string, ok bool) {
	if escapedPath == xksBase+"/health" {
		return "health", "", true
	}
	rest, found := strings.CutPrefix(escapedPath, xksBase+"/keys/")
	if !found {
		return "", "", false
	}
	seg, action, found := strings.Cut(rest, "/")
	if !found || seg == "" || (action != "metadata" && action != "encrypt" && action != "decrypt") {
		return "", "", false
	}
	id, err := url.PathUnescape(seg)
	if err != nil {
		return "", "", false
	}
	return action, id, true
}

// checkSigV4 is sigv4_middleware.rs. In 5.26 a request that cannot even yield a signing-key
// request is a plain-text 401 (actix ErrorUnauthorized); an unknown access key and a failed
// verification are AuthenticationFailedException JSON replies. The newer generation answers
// every failure in JSON (checkSigV4Newer).
func (s *Server) checkSigV4(w http.ResponseWriter, r *http.Request, body []byte) bool {
	if s.cfg.CosmianVersion != Cosmian526 {
		return s.checkSigV4Newer(w, r, body)
	}
	akid, perr := authorizationAccessKey(r.Header.Get("Authorization"))
	if perr != "" {
		s.errCount.Add(1)
		writeText(w, http.StatusUnauthorized, "text/plain; charset=utf-8", perr)
		return false
	}
	if akid != s.cfg.XKS.AccessKeyID {
		s.xksFail(w, "AuthenticationFailedException", "Access key id "+akid+" not found")
		return false
	}
	if _, err := s.verifier.Verify(r, body); err != nil {
		var ae *sigv4.AuthError
		msg := err.Error()
		if errors.As(err, &ae) {
			msg = ae.Message
			switch ae.Reason {
			case sigv4.ReasonMissingAuthorization, sigv4.ReasonMalformedAuthorization,
				sigv4.ReasonUnsupportedAlgorithm, sigv4.ReasonMissingDate, sigv4.ReasonBadDate, sigv4.ReasonBadScope:
				s.errCount.Add(1)
				writeText(w, http.StatusUnauthorized, "text/plain; charset=utf-8", msg)
				return false
			}
		}
		s.xksFail(w, "AuthenticationFailedException", "Signature v4 verification failed: "+msg)
		return false
	}
	return true
}

// xksReplayWindow is XKS_SIGV4_ALLOWED_MISMATCH_MINUTES (sigv4_middleware.rs, after PR #1114).
const xksReplayWindow = 5 * time.Minute

// checkSigV4Newer is sigv4_middleware.rs after PR #1114 (scratchstack 0.11): the request time
// is checked against the 5-minute replay window first, then the signature; every failure is a
// JSON AuthenticationFailedException.
func (s *Server) checkSigV4Newer(w http.ResponseWriter, r *http.Request, body []byte) bool {
	const fail = "AuthenticationFailedException"
	ts := r.Header.Get("X-Amz-Date")
	if ts == "" {
		ts = r.Header.Get("Date")
	}
	if ts == "" {
		s.xksFail(w, fail, "Missing SigV4 request timestamp (expected X-Amz-Date or Date)")
		return false
	}
	t, err := time.Parse("20060102T150405Z", ts)
	if err != nil {
		s.xksFail(w, fail, "Invalid SigV4 X-Amz-Date value: input contains invalid characters")
		return false
	}
	now := s.cfg.Now().UTC().Truncate(time.Second)
	if t.Before(now.Add(-xksReplayWindow)) || t.After(now.Add(xksReplayWindow)) {
		s.xksFail(w, fail, "Signature v4 request timestamp exceeds the 5-minute XKS replay window")
		return false
	}
	if _, err := s.verifier.Verify(r, body); err != nil {
		msg := err.Error()
		var ae *sigv4.AuthError
		if errors.As(err, &ae) {
			msg = ae.Message
			if ae.Reason == sigv4.ReasonUnknownAccessKey {
				akid, _ := authorizationAccessKey(r.Header.Get("Authorization"))
				msg = "Access key id " + akid + " not found"
			}
		}
		s.xksFail(w, fail, "Signature v4 verification failed: "+msg)
		return false
	}
	return true
}

// authorizationAccessKey extracts the access key id of an AWS4-HMAC-SHA256 Authorization
// header; the full verification is sigv4.Verifier's.
func authorizationAccessKey(h string) (string, string) {
	if h == "" {
		return "", "missing Authorization header"
	}
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return "", "only AWS4-HMAC-SHA256 is supported"
	}
	for _, part := range strings.Split(rest, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "Credential="); ok {
			akid, _, ok := strings.Cut(v, "/")
			if !ok || akid == "" {
				break
			}
			return akid, ""
		}
	}
	return "", "Credential must be AKID/yyyymmdd/region/service/aws4_request"
}

// ---- request decoding (serde semantics of the Rust request structs) ----

type xksMeta struct {
	principal, keyArn, operation, requestID string
}

// decodeObject parses body as a JSON object; the error is serde-worded.
func decodeObject(body []byte, structName string) (map[string]json.RawMessage, string) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, serdeMessage(body, err, "struct "+structName)
	}
	if raw == nil {
		return nil, "invalid type: null, expected struct " + structName + position(body, len(bytes.TrimSpace(body)))
	}
	return raw, ""
}

// decodeMeta reads requestMetadata; fields lists the required fields, optional ones are
// type-checked.
func decodeMeta(body []byte, top map[string]json.RawMessage, required, optional []string) (xksMeta, string) {
	var m xksMeta
	v, ok := top["requestMetadata"]
	if !ok {
		return m, "missing field `requestMetadata`" + positionSuffix(body)
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(v, &raw) != nil || raw == nil {
		return m, "invalid type: " + jsonKind(v) + ", expected struct RequestMetadata" + positionSuffix(body)
	}
	for _, f := range optional {
		if _, msg := decodeOptionalString(raw, f); msg != "" {
			return m, msg + positionSuffix(body)
		}
	}
	dst := map[string]*string{"awsPrincipalArn": &m.principal, "kmsKeyArn": &m.keyArn, "kmsOperation": &m.operation, "kmsRequestId": &m.requestID}
	for _, f := range required {
		if msg := decodeRequiredString(raw, f, dst[f]); msg != "" {
			return m, msg + positionSuffix(body)
		}
	}
	return m, ""
}

func enumField(body []byte, top map[string]json.RawMessage, field, variant string, required bool) string {
	v, ok := top[field]
	if !ok || (!required && bytes.Equal(bytes.TrimSpace(v), []byte("null"))) {
		if required {
			return "missing field `" + field + "`" + positionSuffix(body)
		}
		return ""
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return "invalid type: " + jsonKind(v) + ", expected enum" + positionSuffix(body)
	}
	if s != variant {
		return "unknown variant `" + s + "`, expected `" + variant + "`" + positionSuffix(body)
	}
	return ""
}

func (s *Server) jsonError(w http.ResponseWriter, msg string) {
	s.xksFail(w, "ValidationException", "JSON deserialize error: "+msg)
}

// xksUser is the KMIP identity of an XKS call for the configured access-control generation.
func (s *Server) xksUser(m xksMeta) string {
	if s.cfg.CosmianVersion.serviceIdentity() {
		return XKSServiceUser
	}
	return m.principal
}

// ---- health (health_status.rs) ----

func (s *Server) xksHealth(w http.ResponseWriter, body []byte) {
	top, msg := decodeObject(body, "GetHealthStatusRequest")
	if msg != "" {
		s.jsonError(w, msg)
		return
	}
	if _, msg := decodeMeta(body, top, []string{"kmsRequestId", "kmsOperation"}, nil); msg != "" {
		s.jsonError(w, msg)
		return
	}
	model := "Cosmian KMS " + s.cfg.Version
	writeJSON(w, http.StatusOK, healthResponse{
		XksProxyFleetSize: 1, XksProxyVendor: "Cosmian", XksProxyModel: model, EkmVendor: "Cosmian",
		EkmFleetDetails: []ekmDetails{{ID: "1", Model: model, HealthStatus: "ACTIVE"}},
	})
}

// healthResponse keeps Cosmian's field order (GetHealthStatusResponse in health_status.rs).
type healthResponse struct {
	XksProxyFleetSize int          `json:"xksProxyFleetSize"`
	XksProxyVendor    string       `json:"xksProxyVendor"`
	XksProxyModel     string       `json:"xksProxyModel"`
	EkmVendor         string       `json:"ekmVendor"`
	EkmFleetDetails   []ekmDetails `json:"ekmFleetDetails"`
}

type ekmDetails struct {
	ID           string `json:"id"`
	Model        string `json:"model"`
	HealthStatus string `json:"healthStatus"`
}

// ---- metadata and CreateKey (key_metadata.rs) ----

type keyMetadata struct {
	KeySpec   string   `json:"keySpec"`
	KeyUsage  []string `json:"keyUsage"`
	KeyStatus string   `json:"keyStatus"`
}

var aesUsage = []string{"ENCRYPT", "DECRYPT", "WRAP", "UNWRAP"}

func (s *Server) xksMetadata(w http.ResponseWriter, body []byte, keyID string) {
	top, msg := decodeObject(body, "GetKeyMetadataRequest")
	if msg != "" {
		s.jsonError(w, msg)
		return
	}
	m, msg := decodeMeta(body, top, []string{"awsPrincipalArn", "kmsOperation", "kmsRequestId"}, []string{"awsSourceVpc", "awsSourceVpce"})
	if msg != "" {
		s.jsonError(w, msg)
		return
	}
	s.log.Debug("kmsemu: xks metadata", "kmsRequestId", m.requestID, "kmsOperation", m.operation, "key", keyID)
	switch m.operation {
	case "GetKeyMetadata", "DescribeKey":
		now := s.now()
		s.st.mu.Lock()
		o, kerr := s.retrieveForOperation(keyID, opGetAttributes, s.xksUser(m), now)
		var length int32
		if o != nil {
			length = o.length
		}
		s.st.mu.Unlock()
		if kerr != nil {
			s.xksFail(w, "KeyNotFoundException", kerr.Error())
			return
		}
		// keyStatus is always ENABLED: Cosmian does not look at the state.
		writeJSON(w, http.StatusOK, keyMetadata{KeySpec: "AES_" + itoa(int(length)), KeyUsage: aesUsage, KeyStatus: "ENABLED"})
	case "CreateKey":
		s.xksCreateKey(w, m, keyID)
	default:
		s.xksFail(w, "UnsupportedOperationException", "Unsupported kmsOperation: "+m.operation)
	}
}

func (s *Server) xksCreateKey(w http.ResponseWriter, m xksMeta, keyID string) {
	material, err := s.randBytes(32)
	if err != nil {
		s.xksFail(w, "InternalException", err.Error())
		return
	}
	now := s.now()
	act := now.Add(-time.Minute)
	o := &object{
		uid: keyID, owner: s.cfg.DefaultUser, state: stateActive, length: 256, usageMask: DefaultUsageMask,
		keyFormat: "TransparentSymmetricKey", activation: &act, initialDate: now,
		tags: []string{"_kk", "aws-xks"}, material: material,
	}
	// Created through KMIP Create inside Cosmian: on 5.28 the latch of extractability applies.
	o.extractable, o.neverExtractable = s.extractability(nil, nil)
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	service := s.cfg.CosmianVersion.serviceIdentity()
	if prior := s.st.objects[keyID]; prior != nil {
		clear(material)
		// Idempotent: the existing object must be readable by the default user.
		if _, kerr := s.retrieveForOperation(keyID, opGetAttributes, s.cfg.DefaultUser, now); kerr != nil {
			s.xksFail(w, "InternalException", "Failed to check prior existence of key "+keyID+": "+kerr.Error())
			return
		}
		if service {
			// After PR #1107 an existing key must carry the aws-xks tag before the reserved
			// identity is granted on it (routes/aws_xks/tests.rs,
			// create_key_rejects_existing_non_xks_symmetric_key).
			if !prior.hasTags([]string{"aws-xks"}) {
				s.xksFail(w, "InternalException", "Key "+keyID+" already exists and is not an AWS XKS key; refusing to grant XKS access")
				return
			}
			if kerr := s.grantLocked(s.cfg.DefaultUser, keyID, XKSServiceUser, opEncrypt|opDecrypt|opGetAttributes, true); kerr != nil {
				s.xksFail(w, "InternalException", "Failed to grant XKS usage on key "+keyID+" to `"+XKSServiceUser+"`: "+kerr.Error())
				return
			}
		}
	} else {
		s.insertLocked(o)
		grantee := m.principal
		if service {
			grantee = XKSServiceUser
		}
		if kerr := s.grantLocked(s.cfg.DefaultUser, keyID, grantee, opEncrypt|opDecrypt|opGetAttributes, true); kerr != nil {
			msg := "Failed to grant access to key " + keyID + ", to user " + grantee + ": " + kerr.Error()
			if service {
				msg = "Failed to grant XKS usage on key " + keyID + " to `" + XKSServiceUser + "`: " + kerr.Error()
			}
			s.xksFail(w, "InternalException", msg)
			return
		}
	}
	writeJSON(w, http.StatusOK, keyMetadata{KeySpec: "AES_256", KeyUsage: aesUsage, KeyStatus: "ENABLED"})
}

// ---- encrypt / decrypt (encrypt_decrypt/encrypt_.rs, decrypt_.rs) ----

type encryptResponse struct {
	Ciphertext                   string  `json:"ciphertext"`
	CiphertextMetadata           *string `json:"ciphertextMetadata"`
	InitializationVector         string  `json:"initializationVector"`
	AuthenticationTag            string  `json:"authenticationTag"`
	CiphertextDataIntegrityValue *string `json:"ciphertextDataIntegrityValue"`
}

var encMetaRequired = []string{"awsPrincipalArn", "kmsKeyArn", "kmsOperation", "kmsRequestId"}
var encMetaOptional = []string{"awsSourceVpc", "awsSourceVpce", "kmsViaService"}

func (s *Server) xksEncrypt(w http.ResponseWriter, body []byte, keyID string) {
	top, msg := decodeObject(body, "EncryptRequest")
	if msg != "" {
		s.jsonError(w, msg)
		return
	}
	m, msg := decodeMeta(body, top, encMetaRequired, encMetaOptional)
	if msg != "" {
		s.jsonError(w, msg)
		return
	}
	var plaintextB64 string
	if msg := decodeRequiredString(top, "plaintext", &plaintextB64); msg != "" {
		s.jsonError(w, msg+positionSuffix(body))
		return
	}
	if msg := enumField(body, top, "encryptionAlgorithm", "AES_GCM", true); msg != "" {
		s.jsonError(w, msg)
		return
	}
	aadB64, msg := decodeOptionalString(top, "additionalAuthenticatedData")
	if msg != "" {
		s.jsonError(w, msg+positionSuffix(body))
		return
	}
	if msg := enumField(body, top, "ciphertextDataIntegrityValueAlgorithm", "SHA_256", false); msg != "" {
		s.jsonError(w, msg)
		return
	}
	cdiv := false
	if v, ok := top["ciphertextDataIntegrityValueAlgorithm"]; ok && !bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		cdiv = true
	}
	s.log.Debug("kmsemu: xks encrypt", "kmsRequestId", m.requestID, "kmsOperation", m.operation, "key", keyID)
	plaintext, err := rustB64Decode(plaintextB64)
	if err != "" {
		s.xksFail(w, "InternalException", "Conversion Error: "+err)
		return
	}
	defer clear(plaintext)
	nonce, rerr := s.randBytes(12) // the XKS layer generates the IV (AES_256_GCM_IV_LENGTH)
	if rerr != nil {
		s.xksFail(w, "InternalException", rerr.Error())
		return
	}
	var aad []byte
	if aadB64 != nil {
		if aad, err = rustB64Decode(*aadB64); err != "" {
			s.xksFail(w, "InternalException", "Conversion Error: "+err)
			return
		}
	}
	uid, ct, iv, tag, kerr := s.encryptGCM(cryptoReq{uid: keyID, data: plaintext, hasData: true, iv: nonce, hasIV: true, aad: aad}, s.xksUser(m))
	if kerr != nil {
		name, emsg := xksNameFor(kerr, false)
		s.xksFail(w, name, emsg)
		return
	}
	corrupt := s.faults.Load().CorruptEncrypt
	if corrupt == CorruptCiphertext {
		ct[0] ^= 1
	}
	resp := encryptResponse{
		Ciphertext:           base64.StdEncoding.EncodeToString(ct),
		InitializationVector: base64.StdEncoding.EncodeToString(iv),
		AuthenticationTag:    base64.StdEncoding.EncodeToString(tag),
	}
	var cm []byte
	if uid != keyID { // resolved through tags: remember the real key
		cm = []byte(uid)
		v := base64.StdEncoding.EncodeToString(cm)
		resp.CiphertextMetadata = &v
	}
	if cdiv {
		h := sha256.New()
		h.Write(aad)
		h.Write(cm)
		h.Write(iv)
		h.Write(ct)
		h.Write(tag)
		sum := h.Sum(nil)
		if corrupt == CorruptCDIV {
			sum[0] ^= 1
		}
		v := base64.StdEncoding.EncodeToString(sum)
		resp.CiphertextDataIntegrityValue = &v
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) xksDecrypt(w http.ResponseWriter, body []byte, keyID string) {
	top, msg := decodeObject(body, "DecryptRequest")
	if msg != "" {
		s.jsonError(w, msg)
		return
	}
	m, msg := decodeMeta(body, top, encMetaRequired, encMetaOptional)
	if msg != "" {
		s.jsonError(w, msg)
		return
	}
	var ctB64, ivB64, tagB64 string
	if msg := decodeRequiredString(top, "ciphertext", &ctB64); msg != "" {
		s.jsonError(w, msg+positionSuffix(body))
		return
	}
	cmB64, msg := decodeOptionalString(top, "ciphertextMetadata")
	if msg != "" {
		s.jsonError(w, msg+positionSuffix(body))
		return
	}
	if msg := enumField(body, top, "encryptionAlgorithm", "AES_GCM", true); msg != "" {
		s.jsonError(w, msg)
		return
	}
	aadB64, msg := decodeOptionalString(top, "additionalAuthenticatedData")
	if msg != "" {
		s.jsonError(w, msg+positionSuffix(body))
		return
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"initializationVector", &ivB64}, {"authenticationTag", &tagB64}} {
		if msg := decodeRequiredString(top, f.name, f.dst); msg != "" {
			s.jsonError(w, msg+positionSuffix(body))
			return
		}
	}
	s.log.Debug("kmsemu: xks decrypt", "kmsRequestId", m.requestID, "kmsOperation", m.operation, "key", keyID)
	var ct, iv, aad, tag []byte
	for _, f := range []struct {
		in  *string
		out *[]byte
	}{{&ctB64, &ct}, {&ivB64, &iv}, {aadB64, &aad}, {&tagB64, &tag}} {
		if f.in == nil {
			continue
		}
		v, err := rustB64Decode(*f.in)
		if err != "" {
			s.xksFail(w, "InternalException", "Conversion Error: "+err)
			return
		}
		*f.out = v
	}
	id := keyID
	if cmB64 != nil { // the metadata names the key (tag lookups on encrypt)
		b, err := rustB64Decode(*cmB64)
		if err != "" {
			s.xksFail(w, "InternalException", "Conversion Error: "+err)
			return
		}
		if !utf8Valid(b) {
			s.xksFail(w, "InternalException", "Conversion Error: invalid utf-8 sequence")
			return
		}
		id = string(b)
	}
	_, pt, kerr := s.decryptGCM(cryptoReq{uid: id, data: ct, hasData: true, iv: iv, hasIV: true, aad: aad, tg: tag}, s.xksUser(m))
	if kerr != nil {
		name, emsg := xksNameFor(kerr, true)
		s.xksFail(w, name, emsg)
		return
	}
	defer clear(pt)
	writeJSON(w, http.StatusOK, map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)})
}

func utf8Valid(b []byte) bool { return strings.ToValidUTF8(string(b), "\uFFFD") == string(b) }

// rustB64Decode decodes standard padded base64 and words failures like the Rust base64 crate's
// DecodeError (approximately: the first offending symbol, else length or padding).
func rustB64Decode(s string) ([]byte, string) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err == nil {
		return b, ""
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	pad := len(s) - len(strings.TrimRight(s, "="))
	body := s[:len(s)-pad]
	for i := 0; i < len(body); i++ {
		if strings.IndexByte(alphabet, body[i]) < 0 {
			return nil, "Invalid symbol " + itoa(int(body[i])) + ", offset " + itoa(i) + "."
		}
	}
	if len(body)%4 == 1 {
		return nil, "Invalid input length: " + itoa(len(body))
	}
	if len(s)%4 != 0 || pad > 2 {
		return nil, "Invalid padding"
	}
	if len(body) > 0 {
		return nil, "Invalid last symbol " + itoa(int(body[len(body)-1])) + ", offset " + itoa(len(body)-1) + "."
	}
	return nil, "Invalid padding"
}
