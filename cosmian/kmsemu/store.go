package kmsemu

import (
	"encoding/json"
	"slices"
	"sort"
	"time"
)

// KMIP states as Cosmian names them on the wire.
const (
	statePreActive            = "PreActive"
	stateActive               = "Active"
	stateDeactivated          = "Deactivated"
	stateCompromised          = "Compromised"
	stateDestroyed            = "Destroyed"
	stateDestroyedCompromised = "Destroyed_Compromised"
)

// Usage-mask bits (KMIP CryptographicUsageMask).
const (
	maskEncrypt      int32 = 0x4
	maskDecrypt      int32 = 0x8
	maskWrapKey      int32 = 0x10
	maskUnwrapKey    int32 = 0x20
	maskKeyAgreement int32 = 0x800
	maskUnrestricted int32 = 0x200000
	// DefaultUsageMask is Encrypt|Decrypt|WrapKey|UnwrapKey, what XKS CreateKey sets.
	DefaultUsageMask = maskEncrypt | maskDecrypt | maskWrapKey | maskUnwrapKey
	// createDefaultMask is what a KMIP Create without a mask gets (crate/kmip/src/kmip_2_1/requests/create.rs).
	createDefaultMask = DefaultUsageMask | maskKeyAgreement
)

// XKSServiceUser is the reserved identity later Cosmian releases (PR #1107) run XKS calls as.
const XKSServiceUser = "[aws-xks-service]"

// kmipOps are Cosmian's KmipOperation variants in enum order; the wire names are serde-lowercase.
var kmipOps = []string{
	"create", "certify", "decrypt", "derivekey", "destroy", "encrypt", "export", "get",
	"getattributes", "hash", "import", "locate", "mac", "revoke", "rekey", "sign",
	"signatureverify", "validate", "setattribute", "modifyattribute", "addattribute",
	"deleteattribute", "activate",
}

type opSet uint32

func opBit(name string) (opSet, bool) {
	i := slices.Index(kmipOps, name)
	if i < 0 {
		return 0, false
	}
	return 1 << uint(i), true
}

func mustOp(name string) opSet {
	b, ok := opBit(name)
	if !ok {
		panic("kmsemu: unknown op " + name)
	}
	return b
}

var (
	opGet           = mustOp("get")
	opExport        = mustOp("export")
	opGetAttributes = mustOp("getattributes")
	opEncrypt       = mustOp("encrypt")
	opDecrypt       = mustOp("decrypt")
	opRevoke        = mustOp("revoke")
	opDestroy       = mustOp("destroy")
	opCreate        = mustOp("create")
)

// names lists the ops in enum order (how Cosmian's BTreeSet serializes them).
func (s opSet) names() []string {
	out := []string{}
	for i, n := range kmipOps {
		if s&(1<<uint(i)) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// object is one managed object (only AES symmetric keys are supported).
type object struct {
	uid, owner  string
	seq         int64  // insertion order: Locate returns objects in it
	state       string // stored state (Cosmian's DB column)
	length      int32  // bits
	usageMask   int32
	keyFormat   string // stored KeyFormatType attribute
	activation  *time.Time
	deactivate  *time.Time
	compromise  *time.Time
	initialDate time.Time
	tags        []string // sorted, includes system tags such as _kk
	sensitive   bool
	// extractable and neverExtractable are the KMIP attributes as stored (nil: absent). 5.28
	// fills both at Create and Import and refuses Get/Export when they forbid it.
	extractable, neverExtractable *bool
	material                      []byte // plaintext key, or the KEK-wrapped key when wrapped
	wrapped                       bool
}

// effectiveState applies the time transitions Cosmian computes on read
// (ObjectWithMetadata::effective_state).
func (o *object) effectiveState(now time.Time) string {
	switch o.state {
	case statePreActive:
		if o.activation != nil && !o.activation.After(now) {
			return stateActive
		}
	case stateActive:
		if o.deactivate != nil && !o.deactivate.After(now) {
			return stateDeactivated
		}
	}
	return o.state
}

func (o *object) destroyed() bool {
	return o.state == stateDestroyed || o.state == stateDestroyedCompromised
}

func (o *object) hasTags(tags []string) bool {
	for _, t := range tags {
		if !slices.Contains(o.tags, t) {
			return false
		}
	}
	return true
}

// usageAllows mirrors Attributes::is_usage_authorized_for in a non-FIPS build: Unrestricted
// allows everything.
func (o *object) usageAllows(bit int32) bool {
	return o.usageMask&(bit|maskUnrestricted) != 0
}

func sortedTags(set map[string]struct{}) []string {
	out := make([]string, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

func tagsJSON(tags []string) string {
	if tags == nil {
		tags = []string{}
	}
	b, _ := json.Marshal(tags) // a []string always marshals
	return string(b)
}

// normalizeNow truncates to whole seconds like Cosmian's time_normalize.
func normalizeNow(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }

// ---- permissions (caller holds s.mu) ----

func (s *Server) opsOf(uid, user string) opSet {
	p := s.st.perms[uid]
	if p == nil {
		return 0
	}
	ops := p[user]
	if user != "*" {
		ops |= p["*"]
	}
	return ops
}

// userHasPermission is retrieve_object_utils::user_has_permission (Get, Export, GetAttributes).
func (s *Server) userHasPermission(user string, o *object, op opSet) bool {
	if user == o.owner {
		return true
	}
	ops := s.opsOf(o.uid, user)
	if op == opGetAttributes && ops != 0 {
		return true
	}
	return ops&(op|opGet) != 0
}

// authorizedWithGetWildcard is crypto_op.rs is_owm_authorized_with_get_wildcard (Encrypt, Decrypt).
func (s *Server) authorizedWithGetWildcard(user string, o *object, op opSet) bool {
	return user == o.owner || s.opsOf(o.uid, user)&(op|opGet) != 0
}

// userCanPerform is permissions.rs user_can_perform_operation (Revoke, Destroy): the op itself.
func (s *Server) userCanPerform(user string, o *object, op opSet) bool {
	return user == o.owner || s.opsOf(o.uid, user)&op != 0
}

// candidates resolves a unique identifier or a JSON array of tags to objects, sorted by UID
// (Cosmian iterates a HashMap; sorting makes the emulator deterministic).
func (s *Server) candidates(uidOrTags string) ([]*object, *kmsError) {
	if len(uidOrTags) > 0 && uidOrTags[0] == '[' {
		var tags []string
		if err := json.Unmarshal([]byte(uidOrTags), &tags); err != nil {
			// serde error inside the database layer: KmsError::Database → 500.
			return nil, &kmsError{kind: kindDatabase, msg: "Invalid Request: " + err.Error()}
		}
		var out []*object
		for _, o := range s.st.objects {
			if o.hasTags(tags) {
				out = append(out, o)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].uid < out[j].uid })
		return out, nil
	}
	if o := s.st.objects[uidOrTags]; o != nil {
		return []*object{o}, nil
	}
	return nil, nil
}

// retrieveForOperation is retrieve_object_utils::retrieve_object_for_operation: the first object
// whose state allows the operation and on which the user has permission; auto-activation of a
// PreActive object whose activation date passed is persisted.
func (s *Server) retrieveForOperation(uidOrTags string, op opSet, user string, now time.Time) (*object, *kmsError) {
	cands, kerr := s.candidates(uidOrTags)
	if kerr != nil {
		return nil, kerr
	}
	for _, o := range cands {
		allowed := true
		switch o.state {
		case stateCompromised:
			allowed = op == opGet || op == opExport || op == opGetAttributes
		case stateDestroyed, stateDestroyedCompromised:
			allowed = op == opGet || op == opGetAttributes
		}
		if !allowed || !s.userHasPermission(user, o, op) {
			continue
		}
		if eff := o.effectiveState(now); eff != o.state {
			o.state = eff
		}
		return o, nil
	}
	return nil, objectNotFound(uidOrTags)
}

// selectCryptoKey is crypto_op.rs select_unique_key followed by the op's map_selection_error.
func (s *Server) selectCryptoKey(id string, decrypt bool, user string, now time.Time) (*object, *kmsError) {
	opName, op, bit := "Encrypt", opEncrypt, maskEncrypt
	accepted := []string{stateActive}
	if decrypt {
		opName, op, bit = "Decrypt", opDecrypt, maskDecrypt
		accepted = []string{stateActive, stateDeactivated, stateCompromised}
	}
	cands, kerr := s.candidates(id)
	if kerr != nil {
		return nil, kerr
	}
	var eligible []*object
	noPermission := false
	wrongUID, wrongState := "", ""
	for _, o := range cands {
		eff := o.effectiveState(now)
		if !slices.Contains(accepted, eff) {
			if eff != stateDestroyed && eff != stateDestroyedCompromised && wrongUID == "" {
				wrongUID, wrongState = o.uid, eff
			}
			continue
		}
		if !s.authorizedWithGetWildcard(user, o, op) {
			noPermission = true
			continue
		}
		if !o.usageAllows(bit) { // an ineligible key is skipped silently
			continue
		}
		eligible = append(eligible, o)
	}
	switch len(eligible) {
	case 1:
		return eligible[0], nil
	case 0:
		switch {
		case noPermission:
			if decrypt {
				return nil, deniedErr("Decrypt: the user " + user + " does not have the permission to decrypt using the key: " + id)
			}
			return nil, deniedErr("Encrypt: the user " + user + " does not have permission to encrypt using the key: " + id)
		case wrongUID != "":
			acc := "[" + joinComma(accepted) + "]"
			return nil, kmipErr("Permission_Denied", opName+": key "+wrongUID+" is in state "+wrongState+" but operation requires one of "+acc)
		default:
			if decrypt {
				return nil, notFoundErr("Decrypt: failed to retrieve the key: " + id)
			}
			return nil, notFoundErr("Encrypt: key id: " + id + ", not found")
		}
	}
	ids := make([]string, len(eligible))
	for i, o := range eligible {
		ids[i] = `"` + o.uid + `"`
	}
	return nil, invalidErr(opName + ": identifier '" + id + "' resolves to " + itoa(len(eligible)) + " valid keys [" + joinComma(ids) + "]; use a unique identifier")
}

func joinComma(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ", "
		}
		out += v
	}
	return out
}

func itoa(n int) string {
	b, _ := json.Marshal(n) // an int always marshals
	return string(b)
}

// scanChunk is how many objects a listing reads per hold of the store's lock.
const scanChunk = 512

// scan calls visit, under the store's lock, for every object whose owner is owner ("" for any),
// a chunk at a time: the lock is held to list the ids, then for scanChunk objects at once.
// Cosmian reads a listing from its database while it serves other calls; with 100 000 objects,
// one hold for the whole listing kept every other call waiting hundreds of milliseconds. An
// object destroyed or created meanwhile is seen or not, as in a database read.
func (s *Server) scan(owner string, visit func(o *object)) {
	s.st.mu.Lock()
	ids := make([]string, 0, len(s.st.objects))
	for uid, o := range s.st.objects {
		if owner == "" || o.owner == owner {
			ids = append(ids, uid)
		}
	}
	s.st.mu.Unlock()
	for len(ids) > 0 {
		n := min(scanChunk, len(ids))
		s.st.mu.Lock()
		for _, uid := range ids[:n] {
			if o := s.st.objects[uid]; o != nil {
				visit(o)
			}
		}
		s.st.mu.Unlock()
		ids = ids[n:]
	}
}
