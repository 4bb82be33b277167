package cutover

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The tally equals a fresh count of the records after any sequence of puts, deletes and
// whole replacements.
func TestTallyStaysExact(t *testing.T) {
	l := &ledger{j: &journal{Keys: map[string]*KeyProgress{}}, tally: newTally()}
	rng := rand.New(rand.NewPCG(1, 2))
	results := []string{ResultOK, ResultSkipped, ResultError, ResultConflict, ResultKept}
	phases := []Phase{PhaseCopy, PhaseVerify}
	for i := 0; i < 20000; i++ {
		id := fmt.Sprintf("k-%d", rng.IntN(300))
		switch n := rng.IntN(100); {
		case n < 80:
			l.putKeyLocked(id, &KeyProgress{Phase: phases[rng.IntN(2)], Result: results[rng.IntN(len(results))], Existing: rng.IntN(4) == 0})
		case n < 98:
			l.deleteKeyLocked(id)
		default:
			keys := map[string]*KeyProgress{}
			for id, k := range l.j.Keys {
				if rng.IntN(2) == 0 {
					keys[id] = k
				}
			}
			l.setKeysLocked(keys)
		}
		if i%97 == 0 {
			want := newTally()
			want.recount(l.j.Keys)
			if !reflect.DeepEqual(want, l.tally) {
				t.Fatalf("after %d changes: tally %+v, a fresh count %+v", i, l.tally.counts, want.counts)
			}
		}
	}
}

// The journal's key records are written only through putKeyLocked, deleteKeyLocked and
// setKeysLocked (tally.go) in the ledger: a write anywhere else would leave the tally wrong.
func TestKeyRecordsChangeThroughTally(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "tally.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		// l.j.Keys: the ledger's journal (other journals, such as a file journal's mirror or a
		// clone being built, are not the ledger's).
		isLedgerKeys := func(e ast.Expr) bool {
			sel, ok := e.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "Keys" {
				return false
			}
			inner, ok := sel.X.(*ast.SelectorExpr)
			return ok && inner.Sel.Name == "j"
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.AssignStmt:
				for _, lhs := range n.Lhs {
					if ix, ok := lhs.(*ast.IndexExpr); ok && isLedgerKeys(ix.X) || isLedgerKeys(lhs) {
						t.Errorf("%s: the ledger's key records written outside tally.go", fset.Position(n.Pos()))
					}
				}
			case *ast.CallExpr:
				if id, ok := n.Fun.(*ast.Ident); ok && id.Name == "delete" && len(n.Args) > 0 && isLedgerKeys(n.Args[0]) {
					t.Errorf("%s: a key record deleted outside tally.go", fset.Position(n.Pos()))
				}
			}
			return true
		})
	}
}
