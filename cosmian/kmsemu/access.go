package kmsemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Access-rights API (crate/server/src/routes/access.rs, crate/access/src/access.rs,
// crate/server/src/core/kms/permissions.rs).

// writeAccessJSONError answers an extraction error like the application-wide JsonConfig error
// handler of start_kms_server.rs: 400, text/plain, the actix error's Display.
func (s *Server) writeAccessJSONError(w http.ResponseWriter, msg string) {
	s.errCount.Add(1)
	writeText(w, http.StatusBadRequest, "text/plain", msg)
}

func jsonContentType(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

func (s *Server) serveGrant(w http.ResponseWriter, r *http.Request, user string, grant bool) {
	if !jsonContentType(r) {
		s.writeAccessJSONError(w, "Content type error")
		return
	}
	body, err := readAll(r)
	if err != nil {
		s.writeAccessJSONError(w, "Json payload size is bigger than allowed")
		return
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		s.writeAccessJSONError(w, "Json deserialize error: "+serdeMessage(body, err, "struct Access"))
		return
	}
	var userID string
	if err := decodeRequiredString(raw, "user_id", &userID); err != "" {
		s.writeAccessJSONError(w, "Json deserialize error: "+err+positionSuffix(body))
		return
	}
	var uid *string
	if v, ok := raw["unique_identifier"]; ok && !bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		var str string
		if json.Unmarshal(v, &str) != nil {
			s.writeAccessJSONError(w, "Json deserialize error: data did not match any variant of untagged enum UniqueIdentifier"+positionSuffix(body))
			return
		}
		uid = &str
	}
	opsRaw, ok := raw["operation_types"]
	if !ok {
		s.writeAccessJSONError(w, "Json deserialize error: missing field `operation_types`"+positionSuffix(body))
		return
	}
	var names []string
	if json.Unmarshal(opsRaw, &names) != nil {
		s.writeAccessJSONError(w, "Json deserialize error: invalid type: expected a sequence"+positionSuffix(body))
		return
	}
	ops, perr := parseOps(names)
	if perr != nil {
		bad := ""
		for _, n := range names {
			if _, ok := opBit(n); !ok {
				bad = n
				break
			}
		}
		s.writeAccessJSONError(w, "Json deserialize error: unknown variant `"+bad+"`, expected one of `"+strings.Join(kmipOps, "`, `")+"`"+positionSuffix(body))
		return
	}
	ops &^= opCreate // no privileged_users: a create grant is a no-op
	if ops != 0 {
		if uid == nil {
			s.writeKMIPError(w, errPlaceholder)
			return
		}
		s.st.mu.Lock()
		kerr := s.grantLocked(user, *uid, userID, ops, grant)
		s.st.mu.Unlock()
		if kerr != nil {
			s.writeKMIPError(w, kerr)
			return
		}
	}
	verb := "added"
	if !grant {
		verb = "deleted"
	}
	writeJSON(w, http.StatusOK, map[string]string{"success": "Access for " + userID + " successfully " + verb})
}

type userAccess struct {
	UserID     string   `json:"user_id"`
	Operations []string `json:"operations"`
}

func (s *Server) serveListAccess(w http.ResponseWriter, r *http.Request, user string) {
	seg := strings.TrimPrefix(r.URL.EscapedPath(), "/access/list/")
	uid, err := url.PathUnescape(seg)
	if err != nil || uid == "" || strings.Contains(seg, "/") {
		writeText(w, http.StatusNotFound, "", "") // actix default: empty 404
		return
	}
	s.st.mu.Lock()
	o := s.st.objects[uid]
	if o == nil || o.owner != user {
		s.st.mu.Unlock()
		s.writeKMIPError(w, deniedErr("Object with uid `"+uid+"` is not owned by owner `"+user+"`"))
		return
	}
	out := []userAccess{}
	for u, ops := range s.st.perms[uid] {
		if ops != 0 {
			out = append(out, userAccess{UserID: u, Operations: ops.names()})
		}
	}
	s.st.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].UserID < out[j].UserID })
	writeJSON(w, http.StatusOK, out)
}

type ownedObject struct {
	ObjectID   string         `json:"object_id"`
	State      string         `json:"state"`
	Attributes map[string]any `json:"attributes"`
}

// attrJSON renders attributes the way serde_json writes Cosmian's Attributes (PascalCase keys,
// absent options omitted). Dates are written as RFC 3339.
func (s *Server) attrJSON(o *object, now time.Time) map[string]any {
	m := map[string]any{
		"CryptographicAlgorithm": "AES",
		"CryptographicLength":    o.length,
		"CryptographicUsageMask": o.usageMask,
		"InitialDate":            o.initialDate.Format(time.RFC3339),
		"ObjectType":             "SymmetricKey",
		"Sensitive":              o.sensitive,
		"State":                  o.effectiveState(now),
		"UniqueIdentifier":       o.uid,
		"Attribute": []map[string]string{{
			"VendorIdentification": s.cfg.VendorID, "AttributeName": "tag", "AttributeValue": tagsJSON(o.tags),
		}},
	}
	if o.keyFormat != "" {
		m["KeyFormatType"] = o.keyFormat
	}
	if o.extractable != nil {
		m["Extractable"] = *o.extractable
	}
	if o.neverExtractable != nil {
		m["NeverExtractable"] = *o.neverExtractable
	}
	if o.activation != nil {
		m["ActivationDate"] = o.activation.Format(time.RFC3339)
	}
	if o.deactivate != nil {
		m["DeactivationDate"] = o.deactivate.Format(time.RFC3339)
	}
	return m
}

func (s *Server) serveOwned(w http.ResponseWriter, user string) {
	now := s.now()
	// Copies taken a chunk at a time (scan), rendered outside the lock: Cosmian reads its
	// database while it answers other requests (a plain copy of each object, without its key
	// material).
	var objs []object
	s.scan(user, func(o *object) {
		cp := *o
		cp.material = nil
		objs = append(objs, cp)
	})
	out := make([]ownedObject, 0, len(objs))
	for i := range objs {
		o := &objs[i]
		out = append(out, ownedObject{ObjectID: o.uid, State: o.effectiveState(now), Attributes: s.attrJSON(o, now)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ObjectID < out[j].ObjectID })
	writeJSON(w, http.StatusOK, out)
}

type obtainedAccess struct {
	ObjectID   string   `json:"object_id"`
	OwnerID    string   `json:"owner_id"`
	State      string   `json:"state"`
	Operations []string `json:"operations"`
}

func (s *Server) serveObtained(w http.ResponseWriter, user string) {
	now := s.now()
	s.st.mu.Lock()
	out := []obtainedAccess{}
	for uid, p := range s.st.perms {
		ops := p[user]
		o := s.st.objects[uid]
		if ops == 0 || o == nil {
			continue
		}
		out = append(out, obtainedAccess{ObjectID: uid, OwnerID: o.owner, State: o.effectiveState(now), Operations: ops.names()})
	}
	s.st.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ObjectID < out[j].ObjectID })
	writeJSON(w, http.StatusOK, out)
}

// ---- small JSON helpers shared with the XKS scope ----

func readAll(r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(r.Body)
	return buf.Bytes(), err
}

// decodeRequiredString reads a required JSON string field; it returns a serde-style message.
func decodeRequiredString(raw map[string]json.RawMessage, field string, dst *string) string {
	v, ok := raw[field]
	if !ok {
		return "missing field `" + field + "`"
	}
	if err := json.Unmarshal(v, dst); err != nil || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		return "invalid type: " + jsonKind(v) + ", expected a string"
	}
	return ""
}

// decodeOptionalString reads an Option<String> field (absent or null → nil).
func decodeOptionalString(raw map[string]json.RawMessage, field string) (*string, string) {
	v, ok := raw[field]
	if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		return nil, ""
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return nil, "invalid type: " + jsonKind(v) + ", expected a string"
	}
	return &s, ""
}

// jsonKind names a JSON value as serde's "invalid type" messages do.
func jsonKind(v json.RawMessage) string {
	t := bytes.TrimSpace(v)
	if len(t) == 0 {
		return "null"
	}
	switch t[0] {
	case 'n':
		return "null"
	case 't', 'f':
		return "boolean `" + string(t) + "`"
	case '"':
		return "string " + string(t)
	case '[':
		return "sequence"
	case '{':
		return "map"
	}
	if bytes.ContainsAny(t, ".eE") {
		return "floating point `" + string(t) + "`"
	}
	return "integer `" + string(t) + "`"
}

// serdeMessage renders a top-level encoding/json error the way serde_json words it.
func serdeMessage(body []byte, err error, want string) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case len(bytes.TrimSpace(body)) == 0:
		return "EOF while parsing a value" + position(body, len(body))
	case errors.As(err, &se):
		if int(se.Offset) >= len(body) {
			return "EOF while parsing a value" + position(body, len(body))
		}
		return "expected value" + position(body, int(se.Offset))
	case errors.As(err, &te):
		return "invalid type: " + te.Value + ", expected " + want + position(body, int(te.Offset))
	}
	return err.Error()
}

func positionSuffix(body []byte) string { return position(body, len(bytes.TrimRight(body, " \t\r\n"))) }

// position is serde_json's " at line L column C" (1-based line, column of the offset).
func position(body []byte, off int) string {
	off = min(max(off, 0), len(body))
	line, col := 1, 0
	for _, c := range body[:off] {
		if c == '\n' {
			line++
			col = 0
		} else {
			col++
		}
	}
	return " at line " + itoa(line) + " column " + itoa(col)
}
