package userapi_test

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/userapi"
)

const openAPIPath = "../docs/openapi.yaml"

// openAPI is docs/openapi.yaml, parsed, with a JSON Schema compiler that
// resolves its #/components references.
type openAPI struct {
	doc      map[string]any
	compiler *jsonschema.Compiler
}

const openAPIURL = "https://countersign.dev/openapi.json"

func loadOpenAPI(t *testing.T) *openAPI {
	t.Helper()
	raw, err := os.ReadFile(openAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	var y any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		t.Fatalf("%s: %v", openAPIPath, err)
	}
	// Through JSON, so the schema compiler sees JSON types.
	j, err := json.Marshal(y)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020) // OpenAPI 3.1's schema dialect
	c.AssertFormat()
	if err := c.AddResource(openAPIURL, doc); err != nil {
		t.Fatal(err)
	}
	o := &openAPI{compiler: c}
	if err := json.Unmarshal(j, &o.doc); err != nil {
		t.Fatal(err)
	}
	if v, _ := o.doc["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Fatalf("openapi: %q, want 3.1.x", v)
	}
	return o
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// operations returns "METHOD path" for every operation in the document.
func (o *openAPI) operations() []string {
	var ops []string
	paths, _ := o.doc["paths"].(map[string]any)
	for p, item := range paths {
		for m := range item.(map[string]any) {
			if slices.Contains(httpMethods, m) {
				ops = append(ops, strings.ToUpper(m)+" "+p)
			}
		}
	}
	sort.Strings(ops)
	return ops
}

func routerOperations(t *testing.T, r *mux.Router) []string {
	var ops []string
	err := r.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := route.GetMethods()
		if err != nil {
			t.Errorf("route %s has no methods: every route must name its methods", tpl)
			return nil
		}
		for _, m := range methods {
			ops = append(ops, m+" "+tpl)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(ops)
	return ops
}

func newServerForDocs(t *testing.T) *userapi.Server {
	keyring, _ := events.NewRandomKeyring()
	srv, err := userapi.NewServer(userapi.Config{}, userapi.Deps{Publisher: &switchPublisher{}, Keyring: keyring})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// The router and the document describe the same operations, both ways.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	o := loadOpenAPI(t)
	doc, routes := o.operations(), routerOperations(t, newServerForDocs(t).Router())
	for _, op := range routes {
		if !slices.Contains(doc, op) {
			t.Errorf("%s is served but not in %s", op, openAPIPath)
		}
	}
	for _, op := range doc {
		if !slices.Contains(routes, op) {
			t.Errorf("%s is in %s but not served", op, openAPIPath)
		}
	}
}

// Every problem type the code can send is listed in the Problem schema,
// and nothing else is.
func TestOpenAPIProblemTypes(t *testing.T) {
	o := loadOpenAPI(t)
	enum := o.resolve(t, "#/components/schemas/Problem/properties/type/enum").([]any)
	var doc, code []string
	for _, v := range enum {
		doc = append(doc, v.(string))
	}
	for _, c := range userapi.Codes() {
		code = append(code, c.Type())
	}
	sort.Strings(doc)
	sort.Strings(code)
	if !slices.Equal(doc, code) {
		t.Errorf("Problem.type enum %v\nwant the codes' types %v", doc, code)
	}
}

// resolve follows a JSON pointer ("#/a/b") in the document.
func (o *openAPI) resolve(t *testing.T, ptr string) any {
	t.Helper()
	var v any = o.doc
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "#/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: %q is not in an object", ptr, tok)
		}
		if v, ok = m[tok]; !ok {
			t.Fatalf("%s: no %q", ptr, tok)
		}
	}
	return v
}

func escape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// responseSchema returns the compiled schema the document gives for an
// answer, or fails the test when the answer is not documented. 404 and 405
// are documented once for all paths, in components.
func (o *openAPI) responseSchema(t *testing.T, method, path string, status int, contentType string) *jsonschema.Schema {
	t.Helper()
	var ptr string
	switch status {
	case http.StatusNotFound:
		ptr = "#/components/responses/NotFound"
	case http.StatusMethodNotAllowed:
		ptr = "#/components/responses/MethodNotAllowed"
	default:
		ptr = "#/paths/" + escape(path) + "/" + strings.ToLower(method) + "/responses/" + strconv.Itoa(status)
		resp, ok := o.resolve(t, "#/paths/"+escape(path)+"/"+strings.ToLower(method)+"/responses").(map[string]any)[strconv.Itoa(status)]
		if !ok {
			t.Fatalf("%s %s answered %d, which %s does not document", method, path, status, openAPIPath)
		}
		if ref, ok := resp.(map[string]any)["$ref"].(string); ok {
			ptr = ref
		}
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		t.Fatalf("%s %s: content type %q: %v", method, path, contentType, err)
	}
	content, _ := o.resolve(t, ptr).(map[string]any)["content"].(map[string]any)
	if _, ok := content[mt]; !ok {
		t.Fatalf("%s %s %d: content type %s not documented at %s", method, path, status, mt, ptr)
	}
	sch, err := o.compiler.Compile(openAPIURL + ptr + "/content/" + escape(mt) + "/schema")
	if err != nil {
		t.Fatalf("compile schema at %s: %v", ptr, err)
	}
	return sch
}

// Real answers, success and failure, match the documented schemas.
func TestResponsesMatchOpenAPI(t *testing.T) {
	o := loadOpenAPI(t)
	h := newHarness(t, func(c *userapi.Config) { c.CodeMaxAttempts = 1; c.RateLimitBurst = 30 })
	email, other := h.email(), h.email()
	check := func(method, path, ctype, body string) response {
		t.Helper()
		r := h.do(method, path, ctype, body)
		sch := o.responseSchema(t, method, path, r.status, r.header.Get("Content-Type"))
		if strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
			return r
		}
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.body))
		if err != nil {
			t.Fatalf("%s %s: body %s: %v", method, path, r.body, err)
		}
		if err := sch.Validate(v); err != nil {
			t.Errorf("%s %s %d: body %s does not match the document: %v", method, path, r.status, r.body, err)
		}
		return r
	}
	reg := func(e string) string { return `{"email":"` + e + `","first_name":"Ada","last_name":"L"}` }
	j := "application/json"
	check("POST", "/api/register", j, reg(email))            // 202
	check("POST", "/api/register", j, reg(email))            // 429 too soon
	check("POST", "/api/register", j, `{"email":1}`)         // 400
	check("POST", "/api/register", "text/plain", reg(email)) // 415
	check("POST", "/api/register", j, `{"email":"`+strings.Repeat("a", 70000)+`"}`)
	_, codes := h.created(email, 1)
	check("POST", "/api/verify", j, `{"email":"`+other+`","code":"000000"}`) // 400 invalid-code
	check("POST", "/api/resend", j, `{"email":"`+other+`"}`)                 // 202
	check("POST", "/api/resend", j, `{"email":"`+email+`"}`)                 // 429 too soon
	check("POST", "/api/verify", j, `{"email":"`+email+`","code":"`+codes[0]+`"}`)
	check("POST", "/api/register", j, reg(other))
	check("POST", "/api/verify", j, `{"email":"`+other+`","code":"abcdef"}`) // 400 invalid-request
	check("POST", "/api/verify", j, `{"email":"`+other+`","code":"000000"}`) // 400, the one attempt
	check("POST", "/api/verify", j, `{"email":"`+other+`","code":"000000"}`) // 429 too many attempts
	check("GET", "/healthz", "", "")
	check("GET", "/readyz", "", "")
	check("GET", "/api/verify", "", "")  // 405
	check("GET", "/api/nothing", "", "") // 404
	h.pub.mode.Store(publishFail)
	check("POST", "/api/register", j, reg(h.email())) // 503
	for i := 0; i < 30; i++ {
		if r := check("POST", "/api/resend", j, `{}`); r.status == http.StatusTooManyRequests {
			return // rate-limited, documented too
		}
	}
	t.Error("the rate limit never answered")
}
