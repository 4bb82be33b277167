package sigv4

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
)

// noEscape marks the bytes AWS leaves unencoded: A-Za-z0-9 - . _ ~
var noEscape = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~'
	}
	return t
}()

const upperHex = "0123456789ABCDEF"

// appendURIEncode appends s with AWS URI encoding; '/' is kept when keepSlash.
func appendURIEncode(dst []byte, s string, keepSlash bool) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if noEscape[c] || (c == '/' && keepSlash) {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', upperHex[c>>4], upperHex[c&15])
		}
	}
	return dst
}

// wirePath is the request path as received. For a server request Go keeps the raw form in
// RawPath exactly when it differs from EscapedPath's default encoding of Path.
func wirePath(u *url.URL) string {
	if u == nil {
		return "/"
	}
	p := u.RawPath
	if p == "" {
		p = u.EscapedPath()
	}
	if p == "" {
		p = "/"
	}
	return p
}

// appendCanonicalQuery appends the AWS canonical query string: every pair decoded, re-encoded
// with AWS rules, sorted by key then value. XKS sends no query, so this path may allocate.
func appendCanonicalQuery(dst []byte, rawQuery string) ([]byte, *AuthError) {
	if rawQuery == "" {
		return dst, nil
	}
	type pair struct{ k, v string }
	var pairs []pair
	for rest := rawQuery; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, "&")
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		dk, err1 := url.QueryUnescape(k)
		dv, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			return dst, errBadQuery.err()
		}
		pairs = append(pairs, pair{
			string(appendURIEncode(nil, dk, false)),
			string(appendURIEncode(nil, dv, false)),
		})
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	for i, p := range pairs {
		if i > 0 {
			dst = append(dst, '&')
		}
		dst = append(dst, p.k...)
		dst = append(dst, '=')
		dst = append(dst, p.v...)
	}
	return dst, nil
}

// lookupHeader returns the values of the header whose lowercase name is name, without
// allocating for the usual canonical-keyed map that net/http builds.
func lookupHeader(h http.Header, name string) []string {
	var kb [64]byte
	if len(name) <= len(kb) {
		upper := true
		for i := 0; i < len(name); i++ {
			c := name[i]
			if upper && c >= 'a' && c <= 'z' {
				c -= 'a' - 'A'
			}
			kb[i] = c
			upper = c == '-'
		}
		if v, ok := h[string(kb[:len(name)])]; ok {
			return v
		}
	} else if v, ok := h[textproto.CanonicalMIMEHeaderKey(name)]; ok {
		return v
	}
	// Requests built by hand may use non-canonical keys.
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// appendTrimmed appends v with leading and trailing whitespace removed and every run of
// spaces collapsed to one, as the AWS SDKs canonicalise header values.
func appendTrimmed(dst []byte, v string) []byte {
	i, j := 0, len(v)
	for i < j && isSpace(v[i]) {
		i++
	}
	for j > i && isSpace(v[j-1]) {
		j--
	}
	for k := i; k < j; k++ {
		if v[k] == ' ' && k > i && v[k-1] == ' ' {
			continue
		}
		dst = append(dst, v[k])
	}
	return dst
}

func requestHost(r *http.Request) string {
	if r.Host != "" {
		return r.Host
	}
	if r.URL != nil {
		return r.URL.Host
	}
	return ""
}

// appendCanonicalRequest appends the SigV4 canonical request of r for the already-parsed
// Authorization a and the body's hex SHA-256.
func appendCanonicalRequest(dst []byte, r *http.Request, a *Authorization, payloadHash []byte) ([]byte, *AuthError) {
	dst = append(dst, r.Method...)
	dst = append(dst, '\n')
	dst = appendURIEncode(dst, wirePath(r.URL), true)
	dst = append(dst, '\n')
	if r.URL != nil {
		var e *AuthError
		if dst, e = appendCanonicalQuery(dst, r.URL.RawQuery); e != nil {
			return dst, e
		}
	}
	dst = append(dst, '\n')
	for rest := a.SignedHeaders; rest != ""; {
		var name string
		name, rest, _ = strings.Cut(rest, ";")
		dst = append(dst, name...)
		dst = append(dst, ':')
		if name == "host" {
			host := requestHost(r)
			if host == "" {
				return dst, errNoHost.err()
			}
			dst = appendTrimmed(dst, host)
			dst = append(dst, '\n')
			continue
		}
		values := lookupHeader(r.Header, name)
		if len(values) == 0 {
			if len(name) > 64 { // keep the client message short (XKS limits it to 512)
				name = name[:64] + "..."
			}
			return dst, authErr(ReasonSignedHeaderMissing, "signed header "+name+" is absent")
		}
		start := len(dst)
		for i, v := range values {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendTrimmed(dst, v)
		}
		if name == "x-amz-content-sha256" {
			if got := dst[start:]; string(got) == "UNSIGNED-PAYLOAD" {
				return dst, errUnsignedBody.err()
			} else if !bytes.Equal(got, payloadHash) {
				return dst, errPayloadHash.err()
			}
		}
		dst = append(dst, '\n')
	}
	dst = append(dst, '\n')
	dst = append(dst, a.SignedHeaders...)
	dst = append(dst, '\n')
	dst = append(dst, payloadHash...)
	return dst, nil
}

// appendStringToSign appends the SigV4 string to sign for a canonical request.
func appendStringToSign(dst []byte, amzDate, scope string, canonicalRequest []byte) []byte {
	sum := sha256.Sum256(canonicalRequest)
	dst = append(dst, algorithm...)
	dst = append(dst, '\n')
	dst = append(dst, amzDate...)
	dst = append(dst, '\n')
	dst = append(dst, scope...)
	dst = append(dst, '\n')
	return hex.AppendEncode(dst, sum[:])
}
