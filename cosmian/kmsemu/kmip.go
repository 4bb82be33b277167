package kmsemu

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

// cosmianOps are the operation tags Cosmian's dispatcher knows (core/operations/dispatch.rs).
// The emulator implements the ten the proxy needs; the others answer Not Supported.
var cosmianOps = []string{
	"Activate", "AddAttribute", "Certify", "Check", "Create", "CreateKeyPair", "Decrypt",
	"DeleteAttribute", "DeriveKey", "Destroy", "DiscoverVersions", "Encrypt", "Export", "Get",
	"GetAttributeList", "GetAttributes", "Hash", "Import", "Locate", "MAC", "MACVerify",
	"ModifyAttribute", "Query", "RNGRetrieve", "RNGSeed", "ReCertify", "ReKey", "ReKeyKeyPair",
	"Register", "Revoke", "SetAttribute", "Sign", "SignatureVerify", "Validate",
}

// maxLocateItems is Cosmian's server cap (core/operations/locate.rs MAX_LOCATE_ITEMS).
const maxLocateItems = 1000

// readBody reads the bounded body; on failure it answers like actix and returns false.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.errCount.Add(1)
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeText(w, http.StatusRequestEntityTooLarge, "text/plain; charset=utf-8", "A payload reached size limit.")
		} else {
			writeText(w, http.StatusBadRequest, "text/plain; charset=utf-8", "Error that occur during reading payload")
		}
		return nil, false
	}
	return body, true
}

// serveKMIP is routes/kmip.rs kmip_2_1_json.
func (s *Server) serveKMIP(w http.ResponseWriter, r *http.Request, user string) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if !utf8.Valid(body) { // actix's String extractor
		s.errCount.Add(1)
		writeText(w, http.StatusBadRequest, "text/plain; charset=utf-8", "Can not decode body")
		return
	}
	defer clear(body) // may hold key material (Import) or plaintext (Encrypt)
	req, err := ttlv.Unmarshal(body)
	if err != nil {
		s.countKMIP("invalid")
		s.writeKMIPError(w, invalidErr(err.Error()))
		return
	}
	defer req.Wipe()
	var resp ttlv.Node
	if req.Tag == "RequestMessage" {
		resp = s.handleMessage(req, user)
	} else {
		s.countKMIP(req.Tag)
		var kerr *kmsError
		resp, kerr = s.dispatch(req, user)
		if kerr != nil {
			s.log.Debug("kmsemu: kmip", "op", req.Tag, "user", user, "err", kerr.Error())
			s.writeKMIPError(w, kerr)
			return
		}
	}
	// Every ByteString of a response is a fresh copy (key material, plaintext): wipe them and the
	// encoded reply once written.
	defer resp.Wipe()
	out, err := ttlv.Marshal(resp)
	if err != nil {
		s.writeKMIPError(w, serverErr(err.Error()))
		return
	}
	defer clear(out)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

func (s *Server) writeKMIPError(w http.ResponseWriter, e *kmsError) {
	s.errCount.Add(1)
	status := e.status()
	body := e.Error()
	if status >= 500 {
		body = "Internal server error"
	}
	writeText(w, status, "text/html; charset=utf-8", body)
}

// handleMessage is routes/kmip.rs handle_ttlv for a RequestMessage plus operations/message.rs.
func (s *Server) handleMessage(req ttlv.Node, user string) ttlv.Node {
	hdr, ok := req.Child("RequestHeader")
	if !ok || hdr.Type != ttlv.Structure {
		return errorResponseMessage(2, 1, "missing field `RequestHeader`", s.now())
	}
	pv, ok := hdr.Child("ProtocolVersion")
	if !ok {
		return errorResponseMessage(2, 1, "missing field `ProtocolVersion`", s.now())
	}
	maj, ok1 := pv.Child("ProtocolVersionMajor")
	minr, ok2 := pv.Child("ProtocolVersionMinor")
	if !ok1 || !ok2 || maj.Type != ttlv.Integer || minr.Type != ttlv.Integer {
		return errorResponseMessage(2, 1, "missing field `ProtocolVersionMajor`", s.now())
	}
	items := req.All("BatchItem")
	if maj.Int != 2 {
		// KMIP 1.x batch items are converted by Cosmian; the emulator speaks 2.1 only.
		return errorResponseMessage(int32(maj.Int), int32(minr.Int), "kmsemu: only KMIP 2.x request messages are emulated", s.now())
	}
	out := []ttlv.Node{}
	for _, it := range items {
		opNode, ok := it.Child("Operation")
		if !ok || opNode.Type != ttlv.Enumeration {
			return errorResponseMessage(2, 1, "missing field `Operation`", s.now())
		}
		payload, ok := it.Child("RequestPayload")
		if !ok || payload.Type != ttlv.Structure {
			return errorResponseMessage(2, 1, "missing field `RequestPayload`", s.now())
		}
		if !slices.Contains(cosmianOps, opNode.Str) {
			return errorResponseMessage(2, 1, "unknown variant `"+opNode.Str+"`", s.now())
		}
		s.countKMIP(opNode.Str)
		payload.Tag = opNode.Str
		resp, kerr := s.dispatch(payload, user)
		bi := []ttlv.Node{ttlv.Enum("Operation", opNode.Str)}
		if id, ok := it.Child("UniqueBatchItemID"); ok && id.Type == ttlv.ByteString {
			bi = append(bi, ttlv.Bytes("UniqueBatchItemID", id.Bytes))
		}
		if kerr != nil {
			s.errCount.Add(1)
			reason, msg := kerr.batchResult()
			bi = append(bi, ttlv.Enum("ResultStatus", "OperationFailed"), ttlv.Enum("ResultReason", reason), ttlv.Text("ResultMessage", msg))
		} else {
			resp.Tag = "ResponsePayload"
			bi = append(bi, ttlv.Enum("ResultStatus", "Success"), resp)
		}
		out = append(out, ttlv.Struct("BatchItem", bi...))
	}
	children := []ttlv.Node{
		ttlv.Struct("ResponseHeader",
			ttlv.Struct("ProtocolVersion", ttlv.Int("ProtocolVersionMajor", int32(maj.Int)), ttlv.Int("ProtocolVersionMinor", int32(minr.Int))),
			ttlv.Date("TimeStamp", s.now()),
			ttlv.Int("BatchCount", int32(len(out))),
		),
	}
	return ttlv.Struct("ResponseMessage", append(children, out...)...)
}

// errorResponseMessage is routes/kmip.rs error_response_ttlv: a ResponseMessage with one
// Invalid_Message batch item and no Operation.
func errorResponseMessage(major, minor int32, msg string, now time.Time) ttlv.Node {
	return ttlv.Struct("ResponseMessage",
		ttlv.Struct("ResponseHeader",
			ttlv.Struct("ProtocolVersion", ttlv.Int("ProtocolVersionMajor", major), ttlv.Int("ProtocolVersionMinor", minor)),
			ttlv.Date("TimeStamp", now),
			ttlv.Int("BatchCount", 1),
		),
		ttlv.Struct("BatchItem",
			ttlv.Enum("ResultStatus", "OperationFailed"),
			ttlv.Enum("ResultReason", "Invalid_Message"),
			ttlv.Text("ResultMessage", msg),
		),
	)
}

// dispatch is core/operations/dispatch.rs for the emulated operations.
func (s *Server) dispatch(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	if req.Type != ttlv.Structure {
		return ttlv.Node{}, codecErr("invalid type: expected struct " + req.Tag)
	}
	switch req.Tag {
	case "Create":
		return s.opCreate(req, user)
	case "Import":
		return s.opImport(req, user)
	case "Get":
		return s.opExportGet(req, user, false)
	case "Export":
		return s.opExportGet(req, user, true)
	case "GetAttributes":
		return s.opGetAttributes(req, user)
	case "Locate":
		return s.opLocate(req, user)
	case "Encrypt":
		return s.opEncrypt(req, user)
	case "Decrypt":
		return s.opDecrypt(req, user)
	case "Revoke":
		return s.opRevoke(req, user)
	case "Destroy":
		return s.opDestroy(req, user)
	}
	if slices.Contains(cosmianOps, req.Tag) {
		return ttlv.Node{}, notSupportedErr("kmsemu: the " + req.Tag + " operation is not emulated")
	}
	return ttlv.Node{}, &kmsError{kind: kindRouteNotFound, msg: "Operation: " + req.Tag}
}
