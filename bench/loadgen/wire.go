package loadgen

import (
	"encoding/base64"
	"errors"
	"unicode/utf8"
)

// opKind is what a request does (the ByOperation key is its String).
type opKind uint8

const (
	opEncrypt opKind = iota
	opDecrypt
	opMetadata
	opCreateKey
	numOps
)

var opNames = [numOps]string{"Encrypt", "Decrypt", "GetKeyMetadata", "CreateKey"}

func (o opKind) String() string {
	if o < numOps {
		return opNames[o]
	}
	return "unknown"
}

// Client-side error classes, after the spec's errorNames in the error table (errNames).
const (
	ErrClientTimeout  = "client_timeout"          // no reply within Config.Timeout
	ErrNetwork        = "network"                 // connection or transport failure
	ErrDropped        = "dropped_client_overload" // open loop: Workers requests already outstanding
	ErrBadResponse    = "bad_response"            // a 2xx reply that is not a valid XKS reply
	ErrUnknownError   = "unknown_error"           // a non-2xx reply without a known errorName
	ErrPlaintext      = "plaintext_mismatch"      // Decrypt returned other bytes than were encrypted
	ErrCreateKeyHook  = "create_hook"             // Config.CreateKeyHook failed
	ErrBadKeyMetadata = "bad_key_metadata"        // GetKeyMetadata reply KMS CreateKey would refuse
)

// errNames indexes every error class; index 0 means success.
var errNames = []string{
	"",
	"ValidationException", "InvalidStateException", "InvalidCiphertextException", "InvalidKeyUsageException",
	"AuthenticationFailedException", "AccessDeniedException", "KeyNotFoundException", "InvalidUriPathException",
	"ThrottlingException", "InternalException", "UnsupportedOperationException", "DependencyTimeoutException",
	ErrClientTimeout, ErrNetwork, ErrDropped, ErrBadResponse, ErrUnknownError, ErrPlaintext, ErrCreateKeyHook,
	ErrBadKeyMetadata,
}

var errIndex = func() map[string]int {
	m := make(map[string]int, len(errNames))
	for i, n := range errNames {
		m[n] = i
	}
	return m
}()

func errIdx(name string) int {
	if i, ok := errIndex[name]; ok && i > 0 {
		return i
	}
	return errIndex[ErrUnknownError]
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, "\ufffd"...)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20 || c == 0x7f:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
		i++
	}
	return append(dst, '"')
}

func appendB64(dst, src []byte) []byte {
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, src)
	return append(dst, '"')
}

// md is the requestMetadata of one request.
type md struct {
	principal, keyArn, operation string
	requestID                    [36]byte
}

func appendMetadata(dst []byte, m *md) []byte {
	dst = append(dst, `{"requestMetadata":{`...)
	if m.principal != "" {
		dst = append(dst, `"awsPrincipalArn":`...)
		dst = appendJSONString(dst, m.principal)
		dst = append(dst, ',')
	}
	if m.keyArn != "" {
		dst = append(dst, `"kmsKeyArn":`...)
		dst = appendJSONString(dst, m.keyArn)
		dst = append(dst, ',')
	}
	dst = append(dst, `"kmsOperation":`...)
	dst = appendJSONString(dst, m.operation)
	dst = append(dst, `,"kmsRequestId":"`...)
	dst = append(dst, m.requestID[:]...)
	return append(dst, `"}`...)
}

// appendEncryptBody appends an Encrypt request body.
func appendEncryptBody(dst []byte, m *md, plaintext, aad []byte, cdiv bool) []byte {
	dst = appendMetadata(dst, m)
	dst = append(dst, `,"plaintext":`...)
	dst = appendB64(dst, plaintext)
	dst = append(dst, `,"encryptionAlgorithm":"AES_GCM"`...)
	if len(aad) > 0 {
		dst = append(dst, `,"additionalAuthenticatedData":`...)
		dst = appendB64(dst, aad)
	}
	if cdiv {
		dst = append(dst, `,"ciphertextDataIntegrityValueAlgorithm":"SHA_256"`...)
	}
	return append(dst, '}')
}

// appendDecryptBody appends a Decrypt request body.
func appendDecryptBody(dst []byte, m *md, s *Sealed) []byte {
	dst = appendMetadata(dst, m)
	dst = append(dst, `,"ciphertext":`...)
	dst = appendB64(dst, s.Ciphertext)
	dst = append(dst, `,"encryptionAlgorithm":"AES_GCM","initializationVector":`...)
	dst = appendB64(dst, s.IV)
	dst = append(dst, `,"authenticationTag":`...)
	dst = appendB64(dst, s.Tag)
	if len(s.CiphertextMetadata) > 0 {
		dst = append(dst, `,"ciphertextMetadata":`...)
		dst = appendB64(dst, s.CiphertextMetadata)
	}
	if len(s.AAD) > 0 {
		dst = append(dst, `,"additionalAuthenticatedData":`...)
		dst = appendB64(dst, s.AAD)
	}
	return append(dst, '}')
}

// appendShortBody appends a GetKeyMetadata or GetHealthStatus body.
func appendShortBody(dst []byte, m *md) []byte {
	return append(appendMetadata(dst, m), '}')
}

// appendUUID writes a version-4 UUID made from two random words (kmsRequestId is opaque to the
// proxy, so a fast non-cryptographic source is enough).
func formatUUID(dst *[36]byte, hi, lo uint64) {
	const hex = "0123456789abcdef"
	hi = hi&^(0xf<<12) | 4<<12   // version 4
	lo = lo&^(0x3<<62) | 0x2<<62 // variant 10
	var b [16]byte
	for i := 0; i < 8; i++ {
		b[i] = byte(hi >> (56 - 8*i))
		b[8+i] = byte(lo >> (56 - 8*i))
	}
	j := 0
	for i, x := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = hex[x>>4], hex[x&0xf]
		j += 2
	}
}

var errMalformed = errors.New("malformed JSON reply")

// scanObject walks the members of the top-level JSON object in body and calls fn with each
// member's raw key and, for string values, the raw string content (escape sequences are
// left as they are), for other values the raw value text. It checks
// structure only as far as needed to find members, and is bounded by len(body).
func scanObject(body []byte, fn func(key, val []byte, isString bool)) error {
	i := skipWS(body, 0)
	if i >= len(body) || body[i] != '{' {
		return errMalformed
	}
	i = skipWS(body, i+1)
	if i < len(body) && body[i] == '}' {
		return nil
	}
	for {
		if i >= len(body) || body[i] != '"' {
			return errMalformed
		}
		ks, ke, ok := scanString(body, i)
		if !ok {
			return errMalformed
		}
		i = skipWS(body, ke+1)
		if i >= len(body) || body[i] != ':' {
			return errMalformed
		}
		i = skipWS(body, i+1)
		if i >= len(body) {
			return errMalformed
		}
		if body[i] == '"' {
			vs, ve, ok := scanString(body, i)
			if !ok {
				return errMalformed
			}
			fn(body[ks+1:ke], body[vs+1:ve], true)
			i = ve + 1
		} else {
			end, ok := skipValue(body, i)
			if !ok {
				return errMalformed
			}
			fn(body[ks+1:ke], body[i:end], false)
			i = end
		}
		i = skipWS(body, i)
		if i >= len(body) {
			return errMalformed
		}
		switch body[i] {
		case ',':
			i = skipWS(body, i+1)
		case '}':
			return nil
		default:
			return errMalformed
		}
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the positions of the opening and closing quotes of the string at b[i].
func scanString(b []byte, i int) (start, end int, ok bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return i, j, true
		}
	}
	return 0, 0, false
}

// skipValue skips a non-string value (number, literal, object, array) starting at b[i] and
// returns the index after it.
func skipValue(b []byte, i int) (int, bool) {
	depth := 0
	for j := i; j < len(b); j++ {
		switch c := b[j]; c {
		case '"':
			_, e, ok := scanString(b, j)
			if !ok {
				return 0, false
			}
			j = e
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return j, true
			}
			depth--
			if depth == 0 {
				return j + 1, true
			}
		case ',':
			if depth == 0 {
				return j, true
			}
		}
	}
	if depth == 0 {
		return len(b), true
	}
	return 0, false
}

// decodeB64 decodes a raw JSON string value holding standard base64 into dst (appending).
// JSON escapes are not expected in base64; "\/" (which some encoders emit) is accepted.
func decodeB64(dst, raw []byte) ([]byte, bool) {
	for _, c := range raw {
		if c == '\\' {
			clean := make([]byte, 0, len(raw))
			for i := 0; i < len(raw); i++ {
				if raw[i] == '\\' {
					if i+1 >= len(raw) || raw[i+1] != '/' {
						return dst, false
					}
					i++
				}
				clean = append(clean, raw[i])
			}
			raw = clean
			break
		}
	}
	out, err := base64.StdEncoding.AppendDecode(dst, raw)
	if err != nil {
		return dst, false
	}
	return out, true
}
