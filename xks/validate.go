package xks

import (
	"fmt"
	"unicode/utf8"
	"unsafe"
)

// Spec minimums (XKS Proxy API v1.0.3): a proxy must support these sizes and may refuse larger
// ones with UnsupportedOperationException.
const (
	SpecMinPayload = 4300 // plaintext / ciphertext bytes
	SpecMinAAD     = 8192 // additionalAuthenticatedData bytes

	maxMetaString         = 2048 // characters; the spec makes proxies accept ARNs of up to 2048
	maxCiphertextMetadata = 20
	cdivLen               = 32
	// bodySlack is what a request may carry besides its payload and AAD: requestMetadata
	// (two 2048-character ARNs and small fields), the other members, and room for unknown ones.
	bodySlack = 32 << 10
)

// Limits bounds what Validate accepts. Sizes above the spec minimums that exceed a limit are
// answered with UnsupportedOperationException (501), as the spec allows; sizes at or below the
// spec minimums are never refused, whatever the limits say.
type Limits struct {
	MaxPayload int // largest plaintext (Encrypt) or ciphertext (Decrypt), in bytes; default 6144
	MaxAAD     int // largest additionalAuthenticatedData, in bytes; default 8192
	MaxBody    int // largest request body, in bytes; default derived from the two above
}

// DefaultLimits returns MaxPayload 6144 (the reference proxy's 8192 base64 characters),
// MaxAAD 8192 (the spec minimum) and the derived MaxBody.
func DefaultLimits() Limits {
	l := Limits{MaxPayload: 6144, MaxAAD: SpecMinAAD}
	l.MaxBody = l.derivedBody()
	return l
}

func b64EncLen(n int) int { return (n + 2) / 3 * 4 }

func (l Limits) derivedBody() int { return b64EncLen(l.MaxPayload) + b64EncLen(l.MaxAAD) + bodySlack }

var specMinBody = Limits{MaxPayload: SpecMinPayload, MaxAAD: SpecMinAAD}.derivedBody()

// CheckAndSetDefaults fills zero fields with defaults and refuses limits below the spec minimums.
func (l *Limits) CheckAndSetDefaults() error {
	d := DefaultLimits()
	if l.MaxPayload == 0 {
		l.MaxPayload = d.MaxPayload
	}
	if l.MaxAAD == 0 {
		l.MaxAAD = d.MaxAAD
	}
	if l.MaxPayload < SpecMinPayload {
		return fmt.Errorf("xks: MaxPayload %d is below the spec minimum %d", l.MaxPayload, SpecMinPayload)
	}
	if l.MaxAAD < SpecMinAAD {
		return fmt.Errorf("xks: MaxAAD %d is below the spec minimum %d", l.MaxAAD, SpecMinAAD)
	}
	if l.MaxBody == 0 {
		l.MaxBody = l.derivedBody()
	}
	if l.MaxBody < specMinBody {
		return fmt.Errorf("xks: MaxBody %d is below %d, the size of a spec-minimum request", l.MaxBody, specMinBody)
	}
	return nil
}

// effective is CheckAndSetDefaults without errors: zero means default, too small means minimum.
func (l Limits) effective() Limits {
	if l.MaxPayload == 0 {
		l.MaxPayload = 6144
	}
	l.MaxPayload = max(l.MaxPayload, SpecMinPayload)
	if l.MaxAAD == 0 {
		l.MaxAAD = SpecMinAAD
	}
	l.MaxAAD = max(l.MaxAAD, SpecMinAAD)
	if l.MaxBody == 0 {
		l.MaxBody = l.derivedBody()
	}
	l.MaxBody = max(l.MaxBody, specMinBody)
	return l
}

// Validated is what the proxy needs from a request: the metadata (for logs and routing, e.g.
// kmsOperation "CreateKey" on GetKeyMetadata) and decoded sizes. It holds no payload bytes.
type Validated struct {
	Op         Operation
	Metadata   RequestMetadata
	PayloadLen int  // decoded plaintext (Encrypt) or ciphertext (Decrypt) length
	AADLen     int  // decoded additionalAuthenticatedData length (0 if absent)
	WantCDIV   bool // Encrypt asked for ciphertextDataIntegrityValueAlgorithm
}

type kind uint8

const (
	kindString kind = iota
	kindB64
	kindMeta
)

type field struct {
	name string
	kind kind
}

// value is what the scanner learnt about one known member.
type value struct {
	start, end int  // raw content span of a string
	n          int  // decoded base64 length
	seen       bool // member present (possibly null); a second one is a duplicate
	set        bool // present and not null
	esc        bool // raw content has escapes
	bad        bool // base64 member that is not canonical padded standard base64
}

// requestMetadata members, in metaFields order.
const (
	mPrincipal = iota
	mKeyArn
	mOperation
	mRequestID
	mVpc
	mVpce
	mVia
	numMeta
)

var metaFields = [numMeta]field{
	{"awsPrincipalArn", kindString},
	{"kmsKeyArn", kindString},
	{"kmsOperation", kindString},
	{"kmsRequestId", kindString},
	{"awsSourceVpc", kindString},
	{"awsSourceVpce", kindString},
	{"kmsViaService", kindString},
}

// Members of each request body; index 0 is always requestMetadata.
var (
	healthFields = []field{{"requestMetadata", kindMeta}}
	encFields    = []field{
		{"requestMetadata", kindMeta},
		{"plaintext", kindB64},
		{"encryptionAlgorithm", kindString},
		{"additionalAuthenticatedData", kindB64},
		{"ciphertextDataIntegrityValueAlgorithm", kindString},
	}
	decFields = []field{
		{"requestMetadata", kindMeta},
		{"ciphertext", kindB64},
		{"encryptionAlgorithm", kindString},
		{"initializationVector", kindB64},
		{"authenticationTag", kindB64},
		{"ciphertextMetadata", kindB64},
		{"additionalAuthenticatedData", kindB64},
	}
)

const (
	eRM = iota
	ePlaintext
	eAlg
	eAAD
	eCDIVAlg
)

const (
	dRM = iota
	dCiphertext
	dAlg
	dIV
	dTag
	dCM
	dAAD
	maxFields = 8
)

// requiredMeta lists the requestMetadata members each operation requires (spec §1.4, and the
// reference proxy: kmsKeyArn optional for GetKeyMetadata).
func requiredMeta(op Operation) []int {
	switch op {
	case OpHealth:
		return []int{mOperation, mRequestID}
	case OpMetadata:
		return []int{mPrincipal, mOperation, mRequestID}
	default:
		return []int{mPrincipal, mOperation, mRequestID, mKeyArn}
	}
}

// lookup returns the index of the member named by the raw key span, or -1.
func lookup(fields []field, raw []byte, esc bool) int {
	if esc {
		if len(raw) > 6*64 {
			return -1
		}
		var tmp [64]byte
		raw = appendUnescaped(tmp[:0], raw)
	}
	for i := range fields {
		if string(raw) == fields[i].name {
			return i
		}
	}
	return -1
}

// object parses the JSON object at s.i (whitespace skipped) whose known members are fields;
// vals[i] receives field i and meta the members of the kindMeta field. depth is the object's
// nesting level (1 for the body). path prefixes member names in messages.
func (s *scanner) object(depth int, fields []field, vals []value, meta []value, path string) *Error {
	if !s.eat('{') {
		return s.syntax()
	}
	s.ws()
	if s.eat('}') {
		return nil
	}
	for {
		ks, ke, kesc, err := s.memberKey()
		if err != nil {
			return err
		}
		s.ws()
		idx := lookup(fields, s.b[ks:ke], kesc)
		if idx < 0 {
			if err := s.skipValue(depth); err != nil {
				return err
			}
		} else {
			f, v := &fields[idx], &vals[idx]
			if v.seen {
				return Errorf(ValidationException, "duplicate member %s%s", path, f.name)
			}
			v.seen = true
			switch c := s.peek(); {
			case c == 'n':
				if err := s.lit("null"); err != nil { // null counts as absent, as in encoding/json
					return err
				}
			case f.kind == kindMeta:
				if c != '{' {
					return Errorf(ValidationException, "%s%s must be an object", path, f.name)
				}
				if depth+1 > maxNesting {
					return Errorf(ValidationException, "JSON nested deeper than %d levels", maxNesting)
				}
				if err := s.object(depth+1, metaFields[:], meta, nil, "requestMetadata."); err != nil { // the only kindMeta member
					return err
				}
				v.set = true
			case c != '"':
				return Errorf(ValidationException, "%s%s must be a string", path, f.name)
			case f.kind == kindString:
				if v.start, v.end, v.esc, err = s.str(); err != nil {
					return err
				}
				v.set = true
			default: // kindB64
				ok := false
				if v.start, v.end, v.n, v.esc, ok, err = s.b64(); err != nil {
					return err
				}
				v.bad = !ok
				v.set = true
			}
		}
		s.ws()
		if s.eat(',') {
			continue
		}
		if s.eat('}') {
			return nil
		}
		return s.syntax()
	}
}

// equals reports whether the string member v decodes to want.
func (s *scanner) equals(v *value, want string) bool {
	raw := s.b[v.start:v.end]
	if !v.esc {
		return string(raw) == want
	}
	if len(raw) > 6*64 {
		return false
	}
	var tmp [64]byte
	return string(appendUnescaped(tmp[:0], raw)) == want
}

// parseBody parses a whole body: one JSON object and nothing but whitespace after it.
func (s *scanner) parseBody(fields []field, vals []value, meta []value) *Error {
	s.ws()
	if s.peek() != '{' {
		return Errorf(ValidationException, "body is not a JSON object")
	}
	if err := s.object(1, fields, vals, meta, ""); err != nil {
		return err
	}
	s.ws()
	if s.i != len(s.b) {
		return Errorf(ValidationException, "unexpected data after the JSON object at byte %d", s.i)
	}
	return nil
}

// Validate checks a raw request body of op as the spec requires, without decoding payloads:
// required members present (null counts as absent; empty strings are accepted), unknown members
// and unknown kmsOperation values accepted, binary members canonical padded standard base64,
// encryptionAlgorithm AES_GCM, ciphertextDataIntegrityValueAlgorithm SHA_256 if present,
// plaintext/ciphertext non-empty, IV 12 or 16 bytes, tag 16, ciphertextMetadata ≤ 20,
// requestMetadata strings ≤ 2048 characters, a single JSON object with no trailing data and no
// duplicate known member, nesting ≤ 32.
//
// Errors are *Error, checked in this order: malformed JSON / wrong member type / duplicates,
// then missing members, then invalid values (all ValidationException, 400), then payload or
// AAD or body larger than lim (UnsupportedOperationException, 501). Messages name the member
// and never echo a value.
func Validate(op Operation, body []byte, lim Limits) (Validated, error) {
	lim = lim.effective()
	if len(body) > lim.MaxBody {
		return Validated{}, Errorf(UnsupportedOperationException, "request body larger than %d bytes", lim.MaxBody)
	}
	var fields []field
	switch op {
	case OpHealth, OpMetadata:
		fields = healthFields
	case OpEncrypt:
		fields = encFields
	case OpDecrypt:
		fields = decFields
	default:
		return Validated{}, Errorf(InternalException, "unknown XKS operation %d", op)
	}
	var vals [maxFields]value
	var meta [numMeta]value
	s := scanner{b: body}
	if err := s.parseBody(fields, vals[:len(fields)], meta[:]); err != nil {
		return Validated{}, err
	}

	// Missing members.
	if !vals[eRM].set {
		return Validated{}, Errorf(ValidationException, "missing requestMetadata")
	}
	for _, k := range requiredMeta(op) {
		if !meta[k].set {
			return Validated{}, Errorf(ValidationException, "missing requestMetadata.%s", metaFields[k].name)
		}
	}
	for i := 1; i < len(fields); i++ {
		if !vals[i].set && requiredField(op, i) {
			return Validated{}, Errorf(ValidationException, "missing %s", fields[i].name)
		}
	}

	// Invalid values.
	for i := 1; i < len(fields); i++ {
		if vals[i].bad {
			return Validated{}, Errorf(ValidationException, "%s is not canonical padded standard base64", fields[i].name)
		}
	}
	v := Validated{Op: op}
	switch op {
	case OpEncrypt:
		v.PayloadLen = vals[ePlaintext].n
		v.AADLen = vals[eAAD].n
		if v.PayloadLen == 0 {
			return Validated{}, Errorf(ValidationException, "plaintext is empty")
		}
		if !s.equals(&vals[eAlg], AlgorithmAESGCM) {
			return Validated{}, Errorf(ValidationException, "encryptionAlgorithm must be AES_GCM")
		}
		if c := &vals[eCDIVAlg]; c.set {
			if !s.equals(c, CDIVAlgSHA256) {
				return Validated{}, Errorf(ValidationException, "ciphertextDataIntegrityValueAlgorithm must be SHA_256")
			}
			v.WantCDIV = true
		}
	case OpDecrypt:
		v.PayloadLen = vals[dCiphertext].n
		v.AADLen = vals[dAAD].n
		if v.PayloadLen == 0 {
			return Validated{}, Errorf(ValidationException, "ciphertext is empty")
		}
		if !s.equals(&vals[dAlg], AlgorithmAESGCM) {
			return Validated{}, Errorf(ValidationException, "encryptionAlgorithm must be AES_GCM")
		}
		if n := vals[dIV].n; n != 12 && n != 16 {
			return Validated{}, Errorf(ValidationException, "initializationVector must be 12 or 16 bytes")
		}
		if vals[dTag].n != 16 {
			return Validated{}, Errorf(ValidationException, "authenticationTag must be 16 bytes")
		}
		if vals[dCM].n > maxCiphertextMetadata {
			return Validated{}, Errorf(ValidationException, "ciphertextMetadata longer than %d bytes", maxCiphertextMetadata)
		}
	}
	var err *Error
	if v.Metadata, err = s.metadata(&meta); err != nil {
		return Validated{}, err
	}

	// Sizes this proxy does not support.
	if v.PayloadLen > lim.MaxPayload {
		name := "plaintext"
		if op == OpDecrypt {
			name = "ciphertext"
		}
		return Validated{}, Errorf(UnsupportedOperationException, "%s larger than %d bytes is not supported", name, lim.MaxPayload)
	}
	if v.AADLen > lim.MaxAAD {
		return Validated{}, Errorf(UnsupportedOperationException, "additionalAuthenticatedData larger than %d bytes is not supported", lim.MaxAAD)
	}
	return v, nil
}

func requiredField(op Operation, i int) bool {
	switch op {
	case OpEncrypt:
		return i == ePlaintext || i == eAlg
	case OpDecrypt:
		return i == dCiphertext || i == dAlg || i == dIV || i == dTag
	}
	return false
}

// metadata decodes the requestMetadata strings into one allocation (the strings share it).
func (s *scanner) metadata(meta *[numMeta]value) (RequestMetadata, *Error) {
	total := 0
	for k := range meta {
		if meta[k].set {
			total += meta[k].end - meta[k].start // decoded text is never longer than its raw form
		}
	}
	var md RequestMetadata
	if total == 0 {
		return md, nil
	}
	buf := make([]byte, 0, total)
	var offs [numMeta + 1]int
	for k := range meta {
		offs[k] = len(buf)
		if v := &meta[k]; v.set {
			if v.esc {
				buf = appendUnescaped(buf, s.b[v.start:v.end])
			} else {
				buf = append(buf, s.b[v.start:v.end]...)
			}
		}
	}
	offs[numMeta] = len(buf)
	// buf is never written again, so the strings may share it (as strings.Builder does).
	all := unsafe.String(unsafe.SliceData(buf), len(buf))
	get := func(k int) string { return all[offs[k]:offs[k+1]] }
	for k := range meta {
		if str := get(k); len(str) > maxMetaString && utf8.RuneCountInString(str) > maxMetaString {
			return md, Errorf(ValidationException, "requestMetadata.%s longer than %d characters", metaFields[k].name, maxMetaString)
		}
	}
	md.AWSPrincipalArn = get(mPrincipal)
	md.KMSKeyArn = get(mKeyArn)
	md.KMSOperation = get(mOperation)
	md.KMSRequestID = get(mRequestID)
	md.AWSSourceVpc = get(mVpc)
	md.AWSSourceVpce = get(mVpce)
	md.KMSViaService = get(mVia)
	return md, nil
}
