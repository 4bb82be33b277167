package sigv4

import "errors"

// ErrAuth matches every *AuthError with errors.Is.
var ErrAuth = errors.New("sigv4: authentication failed")

// Reasons: fixed, low-cardinality labels for metrics.
const (
	ReasonMissingAuthorization   = "missing_authorization"
	ReasonMalformedAuthorization = "malformed_authorization"
	ReasonUnsupportedAlgorithm   = "unsupported_algorithm"
	ReasonUnknownAccessKey       = "unknown_access_key"
	ReasonWrongRegion            = "wrong_region"
	ReasonWrongService           = "wrong_service"
	ReasonBadScope               = "bad_scope"             // terminator not aws4_request, bad date format in scope
	ReasonMissingDate            = "missing_date"          // no X-Amz-Date header
	ReasonBadDate                = "bad_date"              // X-Amz-Date not yyyymmddThhmmssZ
	ReasonDateScopeMismatch      = "date_scope_mismatch"   // X-Amz-Date day != scope day
	ReasonClockSkew              = "clock_skew"            // |now - X-Amz-Date| > MaxSkew
	ReasonHostNotSigned          = "host_not_signed"       // SignedHeaders must include host and x-amz-date
	ReasonSignedHeaderMissing    = "signed_header_missing" // a header listed in SignedHeaders is absent
	ReasonBadSignature           = "bad_signature"         // also: body hash != signed x-amz-content-sha256
)

// AuthError is every verification failure. Reason is one of the Reason* constants; Message is
// safe to send to the client: printable ASCII, no secret, no signature value.
type AuthError struct {
	Reason  string
	Message string
}

func (e *AuthError) Error() string { return "sigv4: " + e.Reason + ": " + e.Message }

// Is makes errors.Is(err, ErrAuth) true for every *AuthError.
func (e *AuthError) Is(target error) bool { return target == ErrAuth }

func authErr(reason, msg string) *AuthError { return &AuthError{Reason: reason, Message: msg} }

// fixedErr is a failure that carries no request data. Each use returns a fresh *AuthError so
// that a caller editing the error it got cannot change what later callers see.
type fixedErr struct{ reason, msg string }

func (f fixedErr) err() *AuthError { return authErr(f.reason, f.msg) }

var (
	errMissingAuth   = fixedErr{ReasonMissingAuthorization, "missing Authorization header"}
	errAuthTooLong   = fixedErr{ReasonMalformedAuthorization, "Authorization header too long"}
	errMultipleAuth  = fixedErr{ReasonMalformedAuthorization, "more than one Authorization header"}
	errBadAlgorithm  = fixedErr{ReasonUnsupportedAlgorithm, "only AWS4-HMAC-SHA256 is supported"}
	errMissingDate   = fixedErr{ReasonMissingDate, "missing X-Amz-Date header"}
	errBadDate       = fixedErr{ReasonBadDate, "X-Amz-Date must be yyyymmddThhmmssZ"}
	errDateScope     = fixedErr{ReasonDateScopeMismatch, "X-Amz-Date day differs from the credential scope date"}
	errClockSkew     = fixedErr{ReasonClockSkew, "X-Amz-Date is too far from the server time"}
	errHostNotSigned = fixedErr{ReasonHostNotSigned, "SignedHeaders must include host and x-amz-date"}
	errBadSignature  = fixedErr{ReasonBadSignature, "signature does not match"}
	errPayloadHash   = fixedErr{ReasonBadSignature, "x-amz-content-sha256 does not match the body"}
	errUnsignedBody  = fixedErr{ReasonBadSignature, "UNSIGNED-PAYLOAD is not accepted"}
	errBadQuery      = fixedErr{ReasonBadSignature, "malformed query string"}
	errNoHost        = fixedErr{ReasonSignedHeaderMissing, "signed header host is absent"}
	errBadScopeTerm  = fixedErr{ReasonBadScope, "credential scope must end with aws4_request"}
	errBadScopeDate  = fixedErr{ReasonBadScope, "credential scope date must be yyyymmdd"}
	errBadScopeParts = fixedErr{ReasonMalformedAuthorization, "Credential must be AKID/yyyymmdd/region/service/aws4_request"}
)
