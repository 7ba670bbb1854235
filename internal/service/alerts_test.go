package service

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAlertRunbooksExist: every alert code the service declares has a
// runbook, and the runbook file exists in the repository.
func TestAlertRunbooksExist(t *testing.T) {
	codes := declaredAlertCodes(t)
	if len(codes) < 5 {
		t.Fatalf("only %d alert codes found in alerts.go: the parser no longer matches it", len(codes))
	}
	for _, c := range codes {
		rb, ok := alertRunbooks[AlertCode(c)]
		if !ok {
			t.Errorf("alert code %s has no runbook in alertRunbooks", c)
			continue
		}
		if !strings.HasPrefix(rb, "docs/runbooks/") || !strings.HasSuffix(rb, ".md") {
			t.Errorf("alert code %s: runbook %q is not a file under docs/runbooks/", c, rb)
		}
		if _, err := os.Stat(filepath.Join("..", "..", filepath.FromSlash(rb))); err != nil {
			t.Errorf("alert code %s: runbook %s: %v", c, rb, err)
		}
	}
	for comp, code := range storageAlertCodes {
		if _, ok := alertRunbooks[code]; !ok {
			t.Errorf("storage component %s maps to %s, which has no runbook", comp, code)
		}
	}
	for _, comp := range []string{"state", "journal"} { // the components state.Store.Health reports
		if _, ok := storageAlertCodes[comp]; !ok {
			t.Errorf("failing %s writes have no alert code", comp)
		}
	}
}

// TestAlertsCarryCodes: the service builds every Alert through newAlert
// (so each has a code and its runbook), never as a bare literal.
func TestAlertsCarryCodes(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || f == "alerts.go" {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			cl, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			if id, ok := cl.Type.(*ast.Ident); ok && id.Name == "Alert" && len(cl.Elts) > 0 {
				t.Errorf("%s: an Alert literal: build it with newAlert and a code", fset.Position(cl.Pos()))
			}
			return true
		})
	}
}

// declaredAlertCodes are the values of the AlertCode constants in alerts.go.
func declaredAlertCodes(t *testing.T) []string {
	t.Helper()
	file, err := parser.ParseFile(token.NewFileSet(), "alerts.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range file.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			v := s.(*ast.ValueSpec)
			if id, ok := v.Type.(*ast.Ident); !ok || id.Name != "AlertCode" {
				continue
			}
			for _, val := range v.Values {
				if lit, ok := val.(*ast.BasicLit); ok {
					out = append(out, strings.Trim(lit.Value, `"`))
				}
			}
		}
	}
	return out
}
