package cutover

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"sort"
	"strings"
	"testing"
)

// The package stays made of parts a reader takes in at one sitting: no type has more than
// maxFields fields or maxMethods methods (an embedded field counts as one), and no constructor
// (New…, new…) starts a goroutine: Run owns them all.
const (
	maxFields  = 16
	maxMethods = 40
)

func TestPartsStaySmall(t *testing.T) {
	fset := token.NewFileSet()
	ents, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") {
			f, err := parser.ParseFile(fset, n, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
	}
	fields := map[string]int{}
	methods := map[string]int{}
	{
		for _, f := range files {
			for _, d := range f.Decls {
				switch d := d.(type) {
				case *ast.GenDecl:
					for _, s := range d.Specs {
						ts, ok := s.(*ast.TypeSpec)
						if !ok {
							continue
						}
						if st, ok := ts.Type.(*ast.StructType); ok {
							fields[ts.Name.Name] = countFields(st.Fields)
						}
					}
				case *ast.FuncDecl:
					if d.Recv != nil {
						methods[receiverName(d.Recv.List[0].Type)]++
						continue
					}
					if n := d.Name.Name; strings.HasPrefix(n, "New") || strings.HasPrefix(n, "new") {
						ast.Inspect(d.Body, func(n ast.Node) bool {
							if g, ok := n.(*ast.GoStmt); ok {
								t.Errorf("%s starts a goroutine (%s): New validates and builds, Run owns the goroutines", d.Name.Name, fset.Position(g.Pos()))
							}
							return true
						})
					}
				}
			}
		}
	}
	var names []string
	for n := range fields {
		names = append(names, n)
	}
	for n := range methods {
		if _, ok := fields[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		if fields[n] > maxFields || methods[n] > maxMethods {
			t.Errorf("type %s has %d fields and %d methods: at most %d and %d", n, fields[n], methods[n], maxFields, maxMethods)
		}
	}
	if len(fields) < 10 || methods["Controller"] == 0 {
		t.Fatalf("parsed %d struct types, %d Controller methods: the count does not see the package", len(fields), methods["Controller"])
	}
}

func countFields(fl *ast.FieldList) int {
	n := 0
	for _, f := range fl.List {
		n += max(len(f.Names), 1)
	}
	return n
}

func receiverName(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return receiverName(t.X)
	case *ast.IndexExpr:
		return receiverName(t.X)
	case *ast.IndexListExpr:
		return receiverName(t.X)
	case *ast.Ident:
		return t.Name
	}
	return ""
}
