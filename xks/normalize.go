package xks

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// Members of the Encrypt and Decrypt replies.
var (
	encRespFields = []field{
		{"ciphertext", kindB64},
		{"initializationVector", kindB64},
		{"authenticationTag", kindB64},
		{"ciphertextMetadata", kindB64},
		{"ciphertextDataIntegrityValue", kindB64},
	}
	decRespFields = []field{{"plaintext", kindB64}}
)

const (
	rCiphertext = iota
	rIV
	rTag
	rCM
	rCDIV
)

const maxKeyUsage = 10
const maxFleet = 10

// NormalizeResponse turns a backend's XKS reply into a spec-exact one for op, appending the
// body to dst (so the caller can pool buffers). v is what Validate returned for the request.
//
// A 2xx reply is checked for the spec's shape and re-encoded compactly with only the spec's
// members, JSON nulls dropped (Cosmian writes "ciphertextMetadata":null):
//   - Encrypt: ciphertext (length == v.PayloadLen when > 0), initializationVector 12 or 16 bytes,
//     authenticationTag 16, ciphertextMetadata ≤ 20 (dropped when empty), and a 32-byte
//     ciphertextDataIntegrityValue that must be present if v.WantCDIV (and is dropped otherwise).
//   - Decrypt: plaintext (length == v.PayloadLen when > 0).
//   - GetKeyMetadata: keySpec, keyUsage (1..10 strings), keyStatus ENABLED or DISABLED.
//   - GetHealthStatus: every member, fleet size > 0, 1..10 fleet entries with a valid healthStatus.
//
// The output status of a success is 200. A malformed success becomes 500 InternalException.
//
// A non-2xx reply is read as {"errorName","errorMessage"}; the output status is the spec status
// of the name (Cosmian's 401 ValidationException becomes 400, its 418 KeyNotFoundException 404)
// and the message is re-sanitised. An unknown or missing name, or a body that is not such JSON
// (Cosmian's plain-text 401 "Unauthorized", HTML, empty), becomes 500 InternalException whose
// message gives the backend status and never the body. AuthenticationFailedException and
// InvalidUriPathException from a backend also become 500 InternalException (wrapping the
// backend's error): the proxy has already authenticated and routed the request, so they mean
// the proxy's own backend configuration is wrong, and AWS must not blame the customer's
// credentials or key store path.
//
// err is nil for a success and otherwise the *Error that out carries (for logs and metrics).
// out is always a complete body to send. For Decrypt, out holds the base64 plaintext: the
// caller should clear it (and body) after sending.
func NormalizeResponse(dst []byte, op Operation, status int, body []byte, v Validated) (outStatus int, out []byte, err error) {
	if status >= 200 && status <= 299 {
		out, e := normalizeSuccess(dst, op, body, v)
		if e != nil {
			e.HTTPStatus = status
			return e.Status(), AppendErrorBody(dst, e.Name, e.Message), e
		}
		return 200, out, nil
	}
	e := replyError(status, body)
	out = AppendErrorBody(dst, e.Name, e.Message)
	switch e.Name {
	case AuthenticationFailedException, InvalidUriPathException:
		e = &Error{
			Name:       InternalException,
			Message:    fmt.Sprintf("key manager refused the proxy's request with %s (HTTP %d); check the proxy's backend configuration", e.Name, status),
			Err:        e,
			HTTPStatus: status,
		}
		out = AppendErrorBody(dst, e.Name, e.Message)
	}
	return e.Status(), out, e
}

// replyError turns a non-2xx XKS reply into an *Error carrying the backend's name (any spec name,
// including Cosmian's 401/418 statuses) or InternalException if the reply is not understood.
func replyError(status int, body []byte) *Error {
	var w struct {
		ErrorName    *string         `json:"errorName"`
		ErrorMessage json.RawMessage `json:"errorMessage"`
	}
	if json.Unmarshal(body, &w) == nil && w.ErrorName != nil {
		if name, ok := ParseErrorName(*w.ErrorName); ok {
			var msg string
			_ = json.Unmarshal(w.ErrorMessage, &msg) // absent, null or not a string: no message
			return &Error{Name: name, Message: Sanitize(msg), HTTPStatus: status}
		}
	}
	if status == http.StatusUnauthorized {
		// Cosmian 5.26's SigV4 layer answers some refusals in plain text (newer releases in
		// JSON): the same backend authentication failure either way.
		return &Error{Name: AuthenticationFailedException, Message: "key manager refused the request's signature", HTTPStatus: status}
	}
	return &Error{
		Name:       InternalException,
		Message:    "key manager reply not understood (HTTP " + strconv.Itoa(status) + ")",
		HTTPStatus: status,
	}
}

func badReply(op Operation, what string) *Error {
	return Errorf(InternalException, "key manager returned an invalid %s reply: %s", op, what)
}

// normalizeSuccess checks a 2xx body and appends its spec-exact form to dst.
func normalizeSuccess(dst []byte, op Operation, body []byte, v Validated) ([]byte, *Error) {
	switch op {
	case OpEncrypt, OpDecrypt:
		return normalizeCrypto(dst, op, body, v)
	case OpMetadata:
		return normalizeMetadata(dst, body)
	case OpHealth:
		return normalizeHealth(dst, body)
	}
	return dst, Errorf(InternalException, "unknown XKS operation %d", op)
}

func normalizeCrypto(dst []byte, op Operation, body []byte, v Validated) ([]byte, *Error) {
	fields := encRespFields
	if op == OpDecrypt {
		fields = decRespFields
	}
	var vals [maxFields]value
	s := scanner{b: body}
	if err := s.parseBody(fields, vals[:len(fields)], nil); err != nil {
		return dst, badReply(op, "not a valid JSON object")
	}
	for i := range fields {
		if vals[i].bad {
			return dst, badReply(op, fields[i].name+" is not canonical padded standard base64")
		}
	}
	if op == OpDecrypt {
		p := &vals[0]
		switch {
		case !p.set:
			return dst, badReply(op, "missing plaintext")
		case v.PayloadLen > 0 && p.n != v.PayloadLen:
			return dst, badReply(op, "plaintext length differs from the ciphertext length")
		case p.n == 0:
			return dst, badReply(op, "plaintext is empty")
		}
		dst = append(dst, `{"plaintext":`...)
		dst = s.appendB64(dst, p)
		return append(dst, '}'), nil
	}
	ct, iv, tag, cm, cdiv := &vals[rCiphertext], &vals[rIV], &vals[rTag], &vals[rCM], &vals[rCDIV]
	switch {
	case !ct.set:
		return dst, badReply(op, "missing ciphertext")
	case !iv.set:
		return dst, badReply(op, "missing initializationVector")
	case !tag.set:
		return dst, badReply(op, "missing authenticationTag")
	case v.PayloadLen > 0 && ct.n != v.PayloadLen:
		return dst, badReply(op, "ciphertext length differs from the plaintext length")
	case ct.n == 0:
		return dst, badReply(op, "ciphertext is empty")
	case iv.n != 12 && iv.n != 16:
		return dst, badReply(op, "initializationVector must be 12 or 16 bytes")
	case tag.n != 16:
		return dst, badReply(op, "authenticationTag must be 16 bytes")
	case cm.n > maxCiphertextMetadata:
		return dst, badReply(op, "ciphertextMetadata longer than 20 bytes")
	case v.WantCDIV && !cdiv.set:
		return dst, badReply(op, "missing ciphertextDataIntegrityValue")
	case v.WantCDIV && cdiv.n != cdivLen:
		return dst, badReply(op, "ciphertextDataIntegrityValue must be 32 bytes")
	}
	dst = append(dst, `{"ciphertext":`...)
	dst = s.appendB64(dst, ct)
	dst = append(dst, `,"initializationVector":`...)
	dst = s.appendB64(dst, iv)
	dst = append(dst, `,"authenticationTag":`...)
	dst = s.appendB64(dst, tag)
	if cm.set && cm.n > 0 {
		dst = append(dst, `,"ciphertextMetadata":`...)
		dst = s.appendB64(dst, cm)
	}
	if v.WantCDIV {
		dst = append(dst, `,"ciphertextDataIntegrityValue":`...)
		dst = s.appendB64(dst, cdiv)
	}
	return append(dst, '}'), nil
}

// appendB64 appends a validated base64 member as a JSON string without escapes.
func (s *scanner) appendB64(dst []byte, v *value) []byte {
	dst = append(dst, '"')
	if v.esc {
		dst = appendUnescaped(dst, s.b[v.start:v.end])
	} else {
		dst = append(dst, s.b[v.start:v.end]...)
	}
	return append(dst, '"')
}

// The rare GetKeyMetadata and GetHealthStatus replies go through encoding/json; pointers tell
// absent or null members from empty ones.

func normalizeMetadata(dst []byte, body []byte) ([]byte, *Error) {
	var w struct {
		KeySpec   *string    `json:"keySpec"`
		KeyUsage  *[]*string `json:"keyUsage"`
		KeyStatus *string    `json:"keyStatus"`
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return dst, badReply(OpMetadata, "not a valid JSON object")
	}
	switch {
	case w.KeySpec == nil:
		return dst, badReply(OpMetadata, "missing keySpec")
	case w.KeyUsage == nil:
		return dst, badReply(OpMetadata, "missing keyUsage")
	case w.KeyStatus == nil:
		return dst, badReply(OpMetadata, "missing keyStatus")
	case *w.KeyStatus != KeyStatusEnabled && *w.KeyStatus != KeyStatusDisabled:
		return dst, badReply(OpMetadata, "keyStatus must be ENABLED or DISABLED")
	}
	dst = append(dst, `{"keySpec":`...)
	dst = appendJSONString(dst, *w.KeySpec)
	dst = append(dst, `,"keyUsage":[`...)
	n := 0
	for _, u := range *w.KeyUsage {
		if u == nil {
			continue
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, *u)
		n++
	}
	if n == 0 || n > maxKeyUsage {
		return dst, badReply(OpMetadata, "keyUsage must have 1 to 10 entries")
	}
	dst = append(dst, `],"keyStatus":`...)
	dst = appendJSONString(dst, *w.KeyStatus)
	return append(dst, '}'), nil
}

func normalizeHealth(dst []byte, body []byte) ([]byte, *Error) {
	type ekm struct {
		ID           *string `json:"id"`
		Model        *string `json:"model"`
		HealthStatus *string `json:"healthStatus"`
	}
	var w struct {
		FleetSize *int32  `json:"xksProxyFleetSize"`
		Vendor    *string `json:"xksProxyVendor"`
		Model     *string `json:"xksProxyModel"`
		EkmVendor *string `json:"ekmVendor"`
		Fleet     *[]*ekm `json:"ekmFleetDetails"`
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return dst, badReply(OpHealth, "not a valid JSON object")
	}
	switch {
	case w.FleetSize == nil || *w.FleetSize <= 0:
		return dst, badReply(OpHealth, "xksProxyFleetSize must be a positive integer")
	case w.Vendor == nil:
		return dst, badReply(OpHealth, "missing xksProxyVendor")
	case w.Model == nil:
		return dst, badReply(OpHealth, "missing xksProxyModel")
	case w.EkmVendor == nil:
		return dst, badReply(OpHealth, "missing ekmVendor")
	case w.Fleet == nil:
		return dst, badReply(OpHealth, "missing ekmFleetDetails")
	}
	start := len(dst)
	dst = append(dst, `{"xksProxyFleetSize":`...)
	dst = strconv.AppendInt(dst, int64(*w.FleetSize), 10)
	dst = append(dst, `,"xksProxyVendor":`...)
	dst = appendJSONString(dst, *w.Vendor)
	dst = append(dst, `,"xksProxyModel":`...)
	dst = appendJSONString(dst, *w.Model)
	dst = append(dst, `,"ekmVendor":`...)
	dst = appendJSONString(dst, *w.EkmVendor)
	dst = append(dst, `,"ekmFleetDetails":[`...)
	n := 0
	for _, e := range *w.Fleet {
		if e == nil {
			continue
		}
		if e.ID == nil || e.Model == nil || e.HealthStatus == nil {
			return dst[:start], badReply(OpHealth, "ekmFleetDetails entry lacks id, model or healthStatus")
		}
		switch *e.HealthStatus {
		case HealthActive, HealthDegraded, HealthUnavailable:
		default:
			return dst[:start], badReply(OpHealth, "ekmFleetDetails healthStatus must be ACTIVE, DEGRADED or UNAVAILABLE")
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"id":`...)
		dst = appendJSONString(dst, *e.ID)
		dst = append(dst, `,"model":`...)
		dst = appendJSONString(dst, *e.Model)
		dst = append(dst, `,"healthStatus":`...)
		dst = appendJSONString(dst, *e.HealthStatus)
		dst = append(dst, '}')
		n++
	}
	if n == 0 || n > maxFleet {
		return dst[:start], badReply(OpHealth, "ekmFleetDetails must have 1 to 10 entries")
	}
	return append(dst, "]}"...), nil
}
