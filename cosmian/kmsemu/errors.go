package kmsemu

import (
	"net/http"
	"strings"
)

// kmsError mirrors Cosmian's server KmsError (crate/server/src/error.rs): its variant decides the
// Display prefix, the HTTP status of a bare /kmip/2_1 reply (crate/server/src/routes/mod.rs,
// ResponseError for KmsError), the ResultReason of a batch item
// (crate/server/src/core/operations/message.rs) and the XKS error name
// (crate/server/src/routes/aws_xks/encrypt_decrypt/{encrypt_,decrypt_}.rs).
//
// Texts emulated (source paths in Cosmian/kms at 7d07cae / tag 5.26.0):
//
//	variant               Display                           bare status   batch ResultReason
//	Kmip21Error(r, m)     "<r>: <m>"                        422           r, message m
//	ItemNotFound(m)       "Item not found: <m>"             422           Item_Not_Found, m
//	InvalidRequest(m)     "Invalid Request: <m>"            422           Operation_Not_Supported, Display
//	NotSupported(m)       "Not Supported: <m>"              422           Operation_Not_Supported, Display
//	Unauthorized(m)       "Access denied: <m>"              401           Permission_Denied, m
//	CryptographicError(m) "Cryptographic error: <m>"        500           Cryptographic_Failure, m
//	Database(e)           "Database Error: <e>"             422 if it contains "already exist", else 500
//	ServerError(m)        "Unexpected server error: <m>"    422 if it contains "not supported"/"Not Supported", else 500
//	ConversionError(m)    "Conversion Error: <m>"           500
//	RouteNotFound(m)      "Route not supported: <m>"        404
//
// 5xx bodies are replaced by "Internal server error"; every bare error body is
// "text/html; charset=utf-8".
//
// Messages used by the operations (file: message):
//
//	retrieve_object_utils.rs  Object_Not_Found: object not found for identifier <uid>
//	export_get.rs             Sensitive: DENIED / Wrong_Key_Lifecycle_State: DENIED (Get of Deactivated) / Object_Destroyed: DENIED (Get of destroyed)
//	export_get.rs (5.28.0)    Not_Extractable: DENIED (assumed text; the reason is from the 5.28.0 release notes)
//	key_ops/crypto_op.rs      <Op>: user <u> does not have permission to use key: <id>  (then remapped per op)
//	                          Permission_Denied: <Op>: key <uid> is in state <S> but operation requires one of [..]
//	                          Invalid Request: <Op>: identifier '<id>' resolves to <n> valid keys [..]; use a unique identifier
//	encrypt.rs                Item not found: Encrypt: key id: <id>, not found   (also: usage mask without Encrypt bit)
//	                          Access denied: Encrypt: the user <u> does not have permission to encrypt using the key: <id>
//	decrypt.rs                Item not found: Decrypt: failed to retrieve the key: <id>
//	                          Access denied: Decrypt: the user <u> does not have the permission to decrypt using the key: <id>
//	                          Invalid_Message: missing-iv
//	error.rs (CryptoError)    Cryptographic_Failure: CRYPTO: error: Error: OpenSSL error. Details: ErrorStack([])  (bad GCM tag)
//	revoke.rs / destroy.rs    Item_Not_Found: <uid> (nothing revocable/destroyable for the caller)
//	destroy.rs                Wrong_Key_Lifecycle_State: DENIED (Active with an activation date)
//	sqlite.rs + db_error.rs   Database Error: Ext. store error: one or more objects already exist (Create)
//	                          Database Error: Ext. store error: Database Error: one or more objects already exist (Import)
//	import.rs                 Unexpected server error: Importing objects with unique identifiers starting with `[` is not supported
//	permissions.rs            Access denied: Object with uid `<uid>` is not owned by owner `<user>`
//	dispatch.rs               Route not supported: Operation: <tag>
type kmsError struct {
	kind   errKind
	reason string // KMIP ErrorReason for kindKmip21
	msg    string
}

type errKind int

const (
	kindKmip21 errKind = iota
	kindItemNotFound
	kindInvalidRequest
	kindNotSupported
	kindUnauthorized
	kindCrypto
	kindDatabase
	kindServer
	kindConversion
	kindRouteNotFound
	kindPlaceholder // KmsError::UnsupportedPlaceholder: fixed text, 422
)

// errPlaceholder is returned when a request has no UniqueIdentifier (Cosmian does not support
// ID placeholders in bare operations).
var errPlaceholder = &kmsError{kind: kindPlaceholder, msg: "This KMIP server does not yet support place holder id"}

func (e *kmsError) Error() string {
	switch e.kind {
	case kindKmip21:
		return e.reason + ": " + e.msg
	case kindItemNotFound:
		return "Item not found: " + e.msg
	case kindInvalidRequest:
		return "Invalid Request: " + e.msg
	case kindNotSupported:
		return "Not Supported: " + e.msg
	case kindUnauthorized:
		return "Access denied: " + e.msg
	case kindCrypto:
		return "Cryptographic error: " + e.msg
	case kindDatabase:
		return "Database Error: " + e.msg
	case kindServer:
		return "Unexpected server error: " + e.msg
	case kindConversion:
		return "Conversion Error: " + e.msg
	case kindRouteNotFound:
		return "Route not supported: " + e.msg
	case kindPlaceholder:
		return e.msg
	}
	return e.msg
}

// status is the HTTP status of a bare-operation error reply.
func (e *kmsError) status() int {
	switch e.kind {
	case kindRouteNotFound:
		return http.StatusNotFound
	case kindUnauthorized:
		return http.StatusUnauthorized
	case kindDatabase:
		if strings.Contains(e.msg, "already exist") {
			return http.StatusUnprocessableEntity
		}
		return http.StatusInternalServerError
	case kindServer:
		if strings.Contains(e.msg, "not supported") || strings.Contains(e.msg, "Not Supported") {
			return http.StatusUnprocessableEntity
		}
		return http.StatusInternalServerError
	case kindCrypto, kindConversion:
		return http.StatusInternalServerError
	}
	return http.StatusUnprocessableEntity
}

// batchResult is the (ResultReason, ResultMessage) of a failed batch item.
func (e *kmsError) batchResult() (string, string) {
	switch e.kind {
	case kindKmip21:
		return e.reason, e.msg
	case kindItemNotFound:
		return "Item_Not_Found", e.msg
	case kindCrypto:
		return "Cryptographic_Failure", e.msg
	case kindUnauthorized:
		return "Permission_Denied", e.msg
	}
	return "Operation_Not_Supported", e.Error()
}

func kmipErr(reason, msg string) *kmsError {
	return &kmsError{kind: kindKmip21, reason: reason, msg: msg}
}
func notFoundErr(msg string) *kmsError     { return &kmsError{kind: kindItemNotFound, msg: msg} }
func invalidErr(msg string) *kmsError      { return &kmsError{kind: kindInvalidRequest, msg: msg} }
func notSupportedErr(msg string) *kmsError { return &kmsError{kind: kindNotSupported, msg: msg} }
func deniedErr(msg string) *kmsError       { return &kmsError{kind: kindUnauthorized, msg: msg} }
func serverErr(msg string) *kmsError       { return &kmsError{kind: kindServer, msg: msg} }
func codecErr(msg string) *kmsError        { return kmipErr("Codec_Error", msg) }
func objectNotFound(uid string) *kmsError {
	return kmipErr("Object_Not_Found", "object not found for identifier "+uid)
}

// errGCMTag is the text Cosmian produces for a failed AES-GCM tag check: an empty OpenSSL
// ErrorStack wrapped by CryptoError::OpenSSL and mapped to Cryptographic_Failure.
var errGCMTag = kmipErr("Cryptographic_Failure", "CRYPTO: error: Error: OpenSSL error. Details: ErrorStack([])")

// xksNameFor maps a KMIP error of an XKS encrypt/decrypt call to the XKS error name, exactly as
// encrypt_.rs / decrypt_.rs do. The XKS message is the inner message for mapped variants and the
// full Display for InternalException.
func xksNameFor(e *kmsError, decrypt bool) (name, msg string) {
	switch {
	case e.kind == kindUnauthorized || (e.kind == kindKmip21 && e.reason == "Permission_Denied"):
		return "InvalidKeyUsageException", e.msg
	case e.kind == kindItemNotFound || (e.kind == kindKmip21 && e.reason == "Item_Not_Found"):
		return "KeyNotFoundException", e.msg
	case decrypt && (e.kind == kindCrypto || (e.kind == kindKmip21 && e.reason == "Cryptographic_Failure")):
		return "InvalidCiphertextException", e.msg
	case e.kind == kindKmip21 && e.reason == "Wrong_Key_Lifecycle_State":
		return "InvalidStateException", e.msg
	case e.kind == kindNotSupported || (e.kind == kindKmip21 && e.reason == "Operation_Not_Supported"):
		return "UnsupportedOperationException", e.msg
	case !decrypt && e.kind == kindCrypto:
		return "ValidationException", e.msg
	case e.kind == kindInvalidRequest || e.kind == kindKmip21:
		return "ValidationException", e.msg
	}
	return "InternalException", e.Error()
}

// xksStatus is Cosmian's HTTP status per XKS error name (routes/aws_xks/error.rs), which differs
// from the XKS specification (401 instead of 400, 418 instead of 404 for KeyNotFound).
func xksStatus(name string) int {
	switch name {
	case "ValidationException", "InvalidStateException", "InvalidCiphertextException",
		"InvalidKeyUsageException", "AuthenticationFailedException":
		return http.StatusUnauthorized
	case "AccessDeniedException":
		return http.StatusForbidden
	case "KeyNotFoundException":
		return http.StatusTeapot
	case "InvalidUriPathException":
		return http.StatusNotFound
	case "ThrottlingException":
		return http.StatusTooManyRequests
	case "UnsupportedOperationException":
		return http.StatusNotImplemented
	case "DependencyTimeoutException":
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
