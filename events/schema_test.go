package events_test

// These tests keep docs/asyncapi.yaml and the code in step. Events are built
// by the real constructors and validated against the document's schemas
// (compiled both as JSON Schema draft 2020-12 and as draft-07, the base of
// AsyncAPI 3.0's own schema format), and drift is checked in both directions:
// every JSON field the Go types emit is declared, every declared field exists
// in Go, every always-emitted field is required. The document allows unknown
// properties (consumers must ignore them), so validation alone could not catch
// a field added in Go but not documented: the explicit checks do.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/countersign/countersign/events"
	"github.com/countersign/countersign/events/kafka"
)

const asyncAPIFile = "../docs/asyncapi.yaml"

// asyncAPIURL is the resource name the document is compiled under; "$ref"s
// inside it ("#/components/schemas/…") resolve against it.
const asyncAPIURL = "file:///countersign/docs/asyncapi.json"

// loadAsyncAPI reads the document and converts it to the JSON data model
// (maps, slices, json.Number), as the schema compiler expects.
func loadAsyncAPI(tb testing.TB) map[string]any {
	tb.Helper()
	raw, err := os.ReadFile(asyncAPIFile)
	if err != nil {
		tb.Fatal(err)
	}
	var y any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		tb.Fatalf("parse %s: %v", asyncAPIFile, err)
	}
	j, err := json.Marshal(y)
	if err != nil {
		tb.Fatalf("%s is not representable as JSON: %v", asyncAPIFile, err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		tb.Fatal(err)
	}
	m, ok := doc.(map[string]any)
	if !ok {
		tb.Fatalf("%s: top level is %T, want a mapping", asyncAPIFile, doc)
	}
	return m
}

// schemaDrafts are the dialects every schema of the document must work in.
var schemaDrafts = []struct {
	name  string
	draft *jsonschema.Draft
}{
	{"draft2020-12", jsonschema.Draft2020},
	{"draft-07", jsonschema.Draft7},
}

// schemaCompiler compiles schemas from the document with format and content
// (base64) assertions on.
func schemaCompiler(tb testing.TB, doc map[string]any, draft *jsonschema.Draft) *jsonschema.Compiler {
	tb.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(draft)
	c.AssertFormat()
	c.AssertContent()
	if err := c.AddResource(asyncAPIURL, any(doc)); err != nil {
		tb.Fatal(err)
	}
	return c
}

func compileAt(tb testing.TB, c *jsonschema.Compiler, ptr string) *jsonschema.Schema {
	tb.Helper()
	s, err := c.Compile(asyncAPIURL + "#" + ptr)
	if err != nil {
		tb.Fatalf("compile %s: %v", ptr, err)
	}
	return s
}

// lookup follows a JSON pointer ("/a/b") from the document root.
func lookup(tb testing.TB, doc any, ptr string) any {
	tb.Helper()
	node := doc
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch n := node.(type) {
		case map[string]any:
			v, ok := n[tok]
			if !ok {
				tb.Fatalf("%s: %q not found in %s", asyncAPIFile, tok, ptr)
			}
			node = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(n) {
				tb.Fatalf("%s: bad index %q in %s", asyncAPIFile, tok, ptr)
			}
			node = n[i]
		default:
			tb.Fatalf("%s: cannot descend into %T at %q of %s", asyncAPIFile, node, tok, ptr)
		}
	}
	return node
}

func pointerTo(parent string, key string) string {
	return parent + "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(key)
}

// deref follows local "$ref"s and returns the pointer and node finally
// reached.
func deref(tb testing.TB, doc any, ptr string) (string, any) {
	tb.Helper()
	node := lookup(tb, doc, ptr)
	for range 32 {
		m, ok := node.(map[string]any)
		if !ok {
			return ptr, node
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return ptr, node
		}
		if !strings.HasPrefix(ref, "#/") {
			tb.Fatalf("%s: only local references are supported, got %q at %s", asyncAPIFile, ref, ptr)
		}
		ptr = strings.TrimPrefix(ref, "#")
		node = lookup(tb, doc, ptr)
	}
	tb.Fatalf("%s: reference loop at %s", asyncAPIFile, ptr)
	return "", nil
}

func asMap(tb testing.TB, v any, what string) map[string]any {
	tb.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		tb.Fatalf("%s: %s is %T, want a mapping", asyncAPIFile, what, v)
	}
	return m
}

// channelByAddress returns the pointer of the one channel with address addr.
func channelByAddress(tb testing.TB, doc map[string]any, addr string) string {
	tb.Helper()
	var found []string
	for name, ch := range asMap(tb, doc["channels"], "channels") {
		if asMap(tb, ch, "channel "+name)["address"] == addr {
			found = append(found, pointerTo("/channels", name))
		}
	}
	if len(found) != 1 {
		tb.Fatalf("%s: %d channels with address %q, want exactly 1", asyncAPIFile, len(found), addr)
	}
	return found[0]
}

// channelMessage returns the pointer of the single message of a channel,
// after references.
func channelMessage(tb testing.TB, doc map[string]any, channelPtr string) string {
	tb.Helper()
	msgs := asMap(tb, lookup(tb, doc, channelPtr+"/messages"), channelPtr+"/messages")
	if len(msgs) != 1 {
		tb.Fatalf("%s: %s has %d messages, want 1", asyncAPIFile, channelPtr, len(msgs))
	}
	for name := range msgs {
		ptr, _ := deref(tb, doc, pointerTo(channelPtr+"/messages", name))
		return ptr
	}
	panic("unreachable")
}

// toJSONValue turns a Go value into the JSON data model of the validator.
func toJSONValue(tb testing.TB, v any) any {
	tb.Helper()
	var raw []byte
	switch v := v.(type) {
	case []byte:
		raw = v
	default:
		var err error
		if raw, err = json.Marshal(v); err != nil {
			tb.Fatal(err)
		}
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		tb.Fatalf("unmarshal %s: %v", raw, err)
	}
	return inst
}

// schemaFixture is one real event per topic, built by the package's own
// constructors, and its marshalled document.
type schemaFixture struct {
	topic string
	event events.Event
	doc   []byte
}

func schemaFixtures(tb testing.TB) []schemaFixture {
	tb.Helper()
	k, err := events.NewRandomKeyring()
	if err != nil {
		tb.Fatal(err)
	}
	userID := uuid.NewString()
	email := "  Grace.Hopper@Example.COM "
	// A local time zone on purpose: the events must still carry UTC.
	zone := time.FixedZone("UTC+2", 2*3600)
	cd := events.UserAccountCreated{
		UserID: userID, Email: email, FirstName: "Grace", LastName: "Hopper",
		ExpiresAt: time.Now().In(zone).Add(15 * time.Minute),
	}
	sealed, err := k.Seal("482913", cd)
	if err != nil {
		tb.Fatal(err)
	}
	// The optional fields are filled, so the schema sees them too.
	link, err := k.SealLinkToken("Xq3v8mRk2n9Lp4sT7wYb1A", userID, email)
	if err != nil {
		tb.Fatal(err)
	}
	cd.EncryptedCode = sealed
	cd.EncryptedLinkToken, cd.Locale = &link, "zh-CN"
	created, err := events.NewUserAccountCreated(cd)
	if err != nil {
		tb.Fatal(err)
	}
	verified, err := events.NewUserAccountVerified(events.UserAccountVerified{
		UserID: userID, Email: email, FirstName: "Grace", LastName: "Hopper",
		VerifiedAt: time.Now().In(zone), Locale: "zh-CN",
	})
	if err != nil {
		tb.Fatal(err)
	}
	// One fixture carries the tracing extension, the other does not.
	created.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	created.TraceState = "congo=t61rcWkgMzE"
	deleted, err := events.NewUserAccountDeleted(events.UserAccountDeleted{
		UserID: userID, Email: email, DeletedAt: time.Now().In(zone),
	})
	if err != nil {
		tb.Fatal(err)
	}
	exists, err := events.NewUserAccountExists(events.UserAccountExists{
		Email: email, AttemptedAt: time.Now().In(zone), Locale: "zh-CN",
	})
	if err != nil {
		tb.Fatal(err)
	}
	var out []schemaFixture
	for _, e := range []events.Event{created, verified, deleted, exists} {
		doc, err := e.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, schemaFixture{topic: e.Type, event: e, doc: doc})
	}
	if len(out) != len(events.Topics) {
		tb.Fatalf("fixtures cover %d topics, events.Topics has %d: add a fixture for the new topic", len(out), len(events.Topics))
	}
	return out
}

func TestSchemaDocumentHeader(t *testing.T) {
	doc := loadAsyncAPI(t)
	if doc["asyncapi"] != "3.1.0" {
		t.Errorf("asyncapi = %v, want 3.1.0", doc["asyncapi"])
	}
	info := asMap(t, doc["info"], "info")
	if info["title"] != "Countersign events" {
		t.Errorf("info.title = %v", info["title"])
	}
	desc, _ := info["description"].(string)
	for _, want := range []string{"At-least-once", "normalized e-mail", "Ordering per address", "AES-256-GCM", "must ignore"} {
		if !strings.Contains(desc, want) {
			t.Errorf("info.description does not mention %q", want)
		}
	}
	servers := asMap(t, doc["servers"], "servers")
	dev := asMap(t, servers["dev"], "servers.dev")
	if dev["host"] != "127.0.0.1:9092" || dev["protocol"] != "kafka" {
		t.Errorf("servers.dev = %v, want the embedded broker at 127.0.0.1:9092", dev)
	}
}

// Every topic constant is a channel, and every channel is a topic constant or
// the dead-letter pattern.
func TestSchemaChannelsAreTheTopicConstants(t *testing.T) {
	doc := loadAsyncAPI(t)
	for _, topic := range []string{events.TopicUserAccountCreated, events.TopicUserAccountVerified, events.TopicUserAccountDeleted, events.TopicUserAccountExists} {
		if !slices.Contains(events.Topics, topic) {
			t.Errorf("events.Topics lacks %q", topic)
		}
	}
	dlqAddr := kafka.DeadLetterTopic("{groupId}")
	seen := map[string]bool{}
	for name, ch := range asMap(t, doc["channels"], "channels") {
		c := asMap(t, ch, "channel "+name)
		addr, _ := c["address"].(string)
		seen[addr] = true
		switch {
		case addr == dlqAddr:
			params := asMap(t, c["parameters"], "dead-letter channel parameters")
			p := asMap(t, params["groupId"], "parameter groupId")
			if p["location"] != "$message.header#/"+kafka.HeaderDLQGroup {
				t.Errorf("groupId location = %v, want the %s header", p["location"], kafka.HeaderDLQGroup)
			}
		case slices.Contains(events.Topics, addr):
			b := asMap(t, lookup(t, doc, pointerTo("/channels", name)+"/bindings/kafka"), "kafka channel binding")
			if b["topic"] != addr {
				t.Errorf("channel %s: kafka binding topic %v, want %q", name, b["topic"], addr)
			}
		default:
			t.Errorf("channel %s has address %q, which is neither a topic constant nor %q", name, addr, dlqAddr)
		}
	}
	for _, topic := range append(slices.Clone(events.Topics), dlqAddr) {
		if !seen[topic] {
			t.Errorf("no channel has address %q", topic)
		}
	}
}

// The real events validate against the schemas the document attaches to each
// topic's channel: payload, headers and record key.
func TestSchemaValidatesBuiltEvents(t *testing.T) {
	doc := loadAsyncAPI(t)
	for _, d := range schemaDrafts {
		c := schemaCompiler(t, doc, d.draft)
		for _, f := range schemaFixtures(t) {
			t.Run(d.name+"/"+f.topic, func(t *testing.T) {
				msg := channelMessage(t, doc, channelByAddress(t, doc, f.topic))
				payloadPtr, _ := deref(t, doc, msg+"/payload")
				if err := compileAt(t, c, payloadPtr).Validate(toJSONValue(t, f.doc)); err != nil {
					t.Errorf("event built by the code does not match %s:\n%s\n%v", payloadPtr, f.doc, err)
				}
				headers := map[string]string{events.HeaderContentType: events.ContentType}
				headersPtr, _ := deref(t, doc, msg+"/headers")
				if err := compileAt(t, c, headersPtr).Validate(toJSONValue(t, headers)); err != nil {
					t.Errorf("record headers %v do not match %s: %v", headers, headersPtr, err)
				}
				keyPtr, _ := deref(t, doc, msg+"/bindings/kafka/key")
				if err := compileAt(t, c, keyPtr).Validate(toJSONValue(t, f.event.Key)); err != nil {
					t.Errorf("record key %q does not match %s: %v", f.event.Key, keyPtr, err)
				}
				if f.event.Key != "grace.hopper@example.com" {
					t.Errorf("record key = %q, want the normalized address", f.event.Key)
				}
				// The examples in the document are held to the same schemas.
				examples, _ := lookup(t, doc, msg+"/examples").([]any)
				if len(examples) == 0 {
					t.Errorf("%s has no examples", msg)
				}
				for i, ex := range examples {
					exm := asMap(t, ex, fmt.Sprintf("%s/examples/%d", msg, i))
					if err := compileAt(t, c, payloadPtr).Validate(exm["payload"]); err != nil {
						t.Errorf("example %d payload does not match its schema: %v", i, err)
					}
					if err := compileAt(t, c, headersPtr).Validate(exm["headers"]); err != nil {
						t.Errorf("example %d headers do not match their schema: %v", i, err)
					}
				}
			})
		}
	}
}

// The schemas are strict enough to reject documents that are not the
// contract; without this the validation above could pass vacuously.
func TestSchemaRejectsTamperedEvents(t *testing.T) {
	doc := loadAsyncAPI(t)
	fixtures := schemaFixtures(t)
	byTopic := map[string]schemaFixture{}
	for _, f := range fixtures {
		byTopic[f.topic] = f
	}
	payloadSchema := func(t *testing.T, c *jsonschema.Compiler, topic string) *jsonschema.Schema {
		msg := channelMessage(t, doc, channelByAddress(t, doc, topic))
		ptr, _ := deref(t, doc, msg+"/payload")
		return compileAt(t, c, ptr)
	}
	data := func(m map[string]any) map[string]any { return m["data"].(map[string]any) }
	cases := []struct {
		name   string
		topic  string
		mutate func(m map[string]any)
		valid  bool
	}{
		{"unchanged", events.TopicUserAccountCreated, func(map[string]any) {}, true},
		{"unknown data field is allowed (consumers ignore it)", events.TopicUserAccountCreated,
			func(m map[string]any) { data(m)["locale"] = "en-GB" }, true},
		{"unknown extension attribute is allowed", events.TopicUserAccountVerified,
			func(m map[string]any) { m["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" }, true},
		{"missing user_id", events.TopicUserAccountCreated, func(m map[string]any) { delete(data(m), "user_id") }, false},
		{"missing user_id (verified)", events.TopicUserAccountVerified, func(m map[string]any) { delete(data(m), "user_id") }, false},
		{"missing encrypted_code", events.TopicUserAccountCreated, func(m map[string]any) { delete(data(m), "encrypted_code") }, false},
		{"missing nonce", events.TopicUserAccountCreated, func(m map[string]any) {
			delete(data(m)["encrypted_code"].(map[string]any), "nonce")
		}, false},
		{"nonce not base64", events.TopicUserAccountCreated, func(m map[string]any) {
			data(m)["encrypted_code"].(map[string]any)["nonce"] = "not-base64-at-all"
		}, false},
		{"plain code instead of sealed", events.TopicUserAccountCreated, func(m map[string]any) {
			data(m)["encrypted_code"] = "482913"
		}, false},
		{"user_id not a uuid", events.TopicUserAccountCreated, func(m map[string]any) { data(m)["user_id"] = "user-1" }, false},
		{"IDN domain in Unicode", events.TopicUserAccountVerified, func(m map[string]any) { data(m)["email"] = "li@例子.测试" }, true},
		{"non-ASCII local part", events.TopicUserAccountCreated, func(m map[string]any) { data(m)["email"] = "josé@example.com" }, true},
		{"email not normalized", events.TopicUserAccountVerified, func(m map[string]any) { data(m)["email"] = "Grace@Example.com" }, false},
		{"email not an address", events.TopicUserAccountVerified, func(m map[string]any) { data(m)["email"] = "grace" }, false},
		{"empty first_name", events.TopicUserAccountVerified, func(m map[string]any) { data(m)["first_name"] = "" }, false},
		{"verified_at not UTC", events.TopicUserAccountVerified, func(m map[string]any) { data(m)["verified_at"] = "2026-05-04T11:14:02+02:00" }, false},
		{"expires_at not a date-time", events.TopicUserAccountCreated, func(m map[string]any) { data(m)["expires_at"] = "tomorrow" }, false},
		{"wrong type for topic", events.TopicUserAccountCreated, func(m map[string]any) { m["type"] = events.TopicUserAccountVerified }, false},
		{"specversion 0.3", events.TopicUserAccountCreated, func(m map[string]any) { m["specversion"] = "0.3" }, false},
		{"other source", events.TopicUserAccountCreated, func(m map[string]any) { m["source"] = "someone/else" }, false},
		{"id not a uuid", events.TopicUserAccountVerified, func(m map[string]any) { m["id"] = "42" }, false},
		{"missing time", events.TopicUserAccountVerified, func(m map[string]any) { delete(m, "time") }, false},
		{"missing datacontenttype", events.TopicUserAccountVerified, func(m map[string]any) { delete(m, "datacontenttype") }, false},
		{"data of the other type", events.TopicUserAccountVerified, func(m map[string]any) {
			var other map[string]any
			if err := json.Unmarshal(byTopic[events.TopicUserAccountCreated].doc, &other); err != nil {
				panic(err)
			}
			m["data"] = other["data"] // has no verified_at
		}, false},
	}
	for _, d := range schemaDrafts {
		c := schemaCompiler(t, doc, d.draft)
		for _, tc := range cases {
			t.Run(d.name+"/"+tc.name, func(t *testing.T) {
				var m map[string]any
				if err := json.Unmarshal(byTopic[tc.topic].doc, &m); err != nil {
					t.Fatal(err)
				}
				tc.mutate(m)
				err := payloadSchema(t, c, tc.topic).Validate(toJSONValue(t, m))
				if tc.valid && err != nil {
					t.Errorf("rejected, want accepted: %v", err)
				}
				if !tc.valid && err == nil {
					t.Errorf("accepted, want rejected by the %s schema", tc.topic)
				}
			})
		}
	}
}

// objectSchema is the merged view of an object schema: its own properties and
// required list plus those of every allOf member, references followed.
type objectSchema struct {
	props    map[string][]string // property name -> pointers of its subschemas
	required map[string]bool
	types    map[string]bool // values of "type"
	node     []map[string]any
}

func mergeSchemas(tb testing.TB, doc map[string]any, ptrs []string) objectSchema {
	tb.Helper()
	o := objectSchema{props: map[string][]string{}, required: map[string]bool{}, types: map[string]bool{}}
	var visit func(ptr string)
	visit = func(ptr string) {
		ptr, n := deref(tb, doc, ptr)
		m := asMap(tb, n, ptr)
		o.node = append(o.node, m)
		for _, unsupported := range []string{"oneOf", "anyOf", "if", "patternProperties", "dependentSchemas"} {
			if _, ok := m[unsupported]; ok {
				// The drift check below only understands properties and
				// allOf; fail loudly rather than check less than it says.
				tb.Fatalf("%s uses %s: teach the drift check in schema_test.go about it", ptr, unsupported)
			}
		}
		if t, ok := m["type"].(string); ok {
			o.types[t] = true
		}
		if props, ok := m["properties"].(map[string]any); ok {
			for name := range props {
				o.props[name] = append(o.props[name], pointerTo(ptr+"/properties", name))
			}
		}
		if req, ok := m["required"].([]any); ok {
			for _, r := range req {
				o.required[r.(string)] = true
			}
		}
		if all, ok := m["allOf"].([]any); ok {
			for i := range all {
				visit(ptr + "/allOf/" + strconv.Itoa(i))
			}
		}
	}
	for _, p := range ptrs {
		visit(p)
	}
	return o
}

func (o objectSchema) has(key string, want any) bool {
	for _, n := range o.node {
		if v, ok := n[key]; ok && (want == nil || v == want) {
			return true
		}
	}
	return false
}

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

type jsonField struct {
	name      string
	omitempty bool
	typ       reflect.Type
}

// jsonFieldsOf lists the JSON object members encoding/json emits for a struct.
func jsonFieldsOf(typ reflect.Type) ([]jsonField, error) {
	var out []jsonField
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		if f.Anonymous {
			return nil, fmt.Errorf("%s.%s: embedded fields are not supported by the drift check", typ, f.Name)
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name: name, omitempty: strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero"), typ: f.Type})
	}
	return out, nil
}

// goSchemaDrift compares a Go type with the schema at ptrs, recursively, and
// returns every mismatch. rawData names the Go type held by a
// json.RawMessage field at a path ("data").
func goSchemaDrift(tb testing.TB, doc map[string]any, path string, typ reflect.Type, ptrs []string, rawData map[string]reflect.Type) []string {
	tb.Helper()
	var problems []string
	o := mergeSchemas(tb, doc, ptrs)
	fields, err := jsonFieldsOf(typ)
	if err != nil {
		return []string{err.Error()}
	}
	if !o.types["object"] {
		problems = append(problems, fmt.Sprintf("%s: schema type is not object", path))
	}
	goNames, omitted := map[string]bool{}, map[string]bool{}
	for _, f := range fields {
		fp := path + "." + f.name
		goNames[f.name] = true
		omitted[f.name] = f.omitempty
		sub, declared := o.props[f.name]
		if !declared {
			problems = append(problems, fmt.Sprintf("%s: emitted by Go type %s but not declared in the schema", fp, typ))
			continue
		}
		if !f.omitempty && !o.required[f.name] {
			problems = append(problems, fmt.Sprintf("%s: always emitted by %s but not required by the schema", fp, typ))
		}
		ft := f.typ
		if ft == rawType {
			if dt, ok := rawData[fp]; ok {
				ft = dt
			}
		}
		if ft.Kind() == reflect.Pointer {
			// A pointer is how Go leaves out an optional object.
			if !f.omitempty {
				problems = append(problems, fmt.Sprintf("%s: Go pointer %s without omitempty emits null", fp, ft))
			}
			ft = ft.Elem()
		}
		fo := mergeSchemas(tb, doc, sub)
		switch {
		case ft == timeType:
			if !fo.types["string"] || !fo.has("format", "date-time") {
				problems = append(problems, fmt.Sprintf("%s: Go time.Time, want a string with format date-time", fp))
			}
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Uint8:
			if !fo.types["string"] || !fo.has("contentEncoding", "base64") {
				problems = append(problems, fmt.Sprintf("%s: Go []byte, want a string with contentEncoding base64", fp))
			}
		case ft.Kind() == reflect.String:
			if !fo.types["string"] {
				problems = append(problems, fmt.Sprintf("%s: Go string, schema type is not string", fp))
			}
		case ft.Kind() == reflect.Struct:
			problems = append(problems, goSchemaDrift(tb, doc, fp, ft, sub, rawData)...)
		default:
			problems = append(problems, fmt.Sprintf("%s: Go type %s is not handled by the drift check", fp, ft))
		}
	}
	for name := range o.props {
		if !goNames[name] {
			problems = append(problems, fmt.Sprintf("%s.%s: declared in the schema but %s has no such JSON field", path, name, typ))
		}
	}
	for name := range o.required {
		if !goNames[name] {
			problems = append(problems, fmt.Sprintf("%s.%s: required by the schema but never emitted by %s", path, name, typ))
		}
		if omitted[name] {
			problems = append(problems, fmt.Sprintf("%s.%s: required by the schema but %s may omit it (omitempty/omitzero)", path, name, typ))
		}
	}
	sort.Strings(problems)
	return problems
}

func eventSchemaPointer(tb testing.TB, doc map[string]any, topic string) string {
	tb.Helper()
	ptr, _ := deref(tb, doc, channelMessage(tb, doc, channelByAddress(tb, doc, topic))+"/payload")
	return ptr
}

// The Go types and the schemas declare the same fields, in both directions.
func TestSchemaMatchesGoTypes(t *testing.T) {
	doc := loadAsyncAPI(t)
	for topic, dataType := range map[string]reflect.Type{
		events.TopicUserAccountCreated:  reflect.TypeFor[events.UserAccountCreated](),
		events.TopicUserAccountVerified: reflect.TypeFor[events.UserAccountVerified](),
		events.TopicUserAccountDeleted:  reflect.TypeFor[events.UserAccountDeleted](),
		events.TopicUserAccountExists:   reflect.TypeFor[events.UserAccountExists](),
	} {
		t.Run(topic, func(t *testing.T) {
			ptr := eventSchemaPointer(t, doc, topic)
			for _, p := range goSchemaDrift(t, doc, topic, reflect.TypeFor[events.Event](), []string{ptr},
				map[string]reflect.Type{topic + ".data": dataType}) {
				t.Error(p)
			}
		})
	}
}

// The drift check itself can fail: a Go type with an undocumented field and
// without a documented one is reported on both counts.
func TestSchemaDriftCheckDetectsDrift(t *testing.T) {
	type driftedVerified struct {
		UserID     string    `json:"user_id"`
		Email      string    `json:"email"`
		FirstName  string    `json:"first_name"`
		Nickname   string    `json:"nickname"`
		VerifiedAt time.Time `json:"verified_at"`
	}
	doc := loadAsyncAPI(t)
	ptr := eventSchemaPointer(t, doc, events.TopicUserAccountVerified)
	got := strings.Join(goSchemaDrift(t, doc, "v", reflect.TypeFor[events.Event](), []string{ptr},
		map[string]reflect.Type{"v.data": reflect.TypeFor[driftedVerified]()}), "\n")
	for _, want := range []string{
		"v.data.nickname: emitted by Go type",
		"v.data.last_name: declared in the schema but",
		"v.data.last_name: required by the schema but never emitted",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("drift report lacks %q; got:\n%s", want, got)
		}
	}
}

// emittedDrift walks a marshalled document alongside its schema: every member
// present must be declared, every required member must be present.
func emittedDrift(tb testing.TB, doc map[string]any, path string, value any, ptrs []string) []string {
	tb.Helper()
	obj, ok := value.(map[string]any)
	if !ok {
		return nil
	}
	var problems []string
	o := mergeSchemas(tb, doc, ptrs)
	for k, v := range obj {
		sub, ok := o.props[k]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s.%s: emitted but not declared", path, k))
			continue
		}
		problems = append(problems, emittedDrift(tb, doc, path+"."+k, v, sub)...)
	}
	for r := range o.required {
		if _, ok := obj[r]; !ok {
			problems = append(problems, fmt.Sprintf("%s.%s: required but not emitted", path, r))
		}
	}
	return problems
}

func TestSchemaDeclaresEveryEmittedField(t *testing.T) {
	doc := loadAsyncAPI(t)
	for _, f := range schemaFixtures(t) {
		var v map[string]any
		if err := json.Unmarshal(f.doc, &v); err != nil {
			t.Fatal(err)
		}
		for _, p := range emittedDrift(t, doc, f.topic, v, []string{eventSchemaPointer(t, doc, f.topic)}) {
			t.Error(p)
		}
	}
	// And the walk can fail.
	f := schemaFixtures(t)[0]
	var v map[string]any
	if err := json.Unmarshal(f.doc, &v); err != nil {
		t.Fatal(err)
	}
	v["data"].(map[string]any)["code"] = "482913"
	delete(v, "id")
	got := emittedDrift(t, doc, "x", v, []string{eventSchemaPointer(t, doc, f.topic)})
	sort.Strings(got)
	want := []string{"x.data.code: emitted but not declared", "x.id: required but not emitted"}
	if !slices.Equal(got, want) {
		t.Errorf("tampered document: drift = %q, want %q", got, want)
	}
}

// dlqHeaderConsts reads the HeaderDLQ* constants from the package source, so
// a header added there without documenting it fails the test.
func dlqHeaderConsts(tb testing.TB) map[string]string {
	tb.Helper()
	fset := token.NewFileSet()
	out := map[string]string{}
	entries, err := os.ReadDir("kafka")
	if err != nil {
		tb.Fatal(err)
	}
	for _, de := range entries {
		name := de.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join("kafka", name), nil, 0)
		if err != nil {
			tb.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, id := range vs.Names {
					if !strings.HasPrefix(id.Name, "HeaderDLQ") {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						tb.Fatalf("%s: %s is not a string literal", name, id.Name)
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						tb.Fatal(err)
					}
					out[id.Name] = v
				}
			}
		}
	}
	return out
}

func TestSchemaDeadLetterHeadersMatchConstants(t *testing.T) {
	fromSource := dlqHeaderConsts(t)
	// The parse above must agree with the compiled constants.
	compiled := map[string]string{
		"HeaderDLQTopic": kafka.HeaderDLQTopic, "HeaderDLQPartition": kafka.HeaderDLQPartition,
		"HeaderDLQOffset": kafka.HeaderDLQOffset, "HeaderDLQGroup": kafka.HeaderDLQGroup,
		"HeaderDLQError": kafka.HeaderDLQError, "HeaderDLQAttempts": kafka.HeaderDLQAttempts,
		"HeaderDLQFailedAt": kafka.HeaderDLQFailedAt,
	}
	if !reflect.DeepEqual(fromSource, compiled) {
		t.Fatalf("HeaderDLQ* constants in the source = %v, want %v", fromSource, compiled)
	}
	var want []string
	for _, v := range fromSource {
		want = append(want, v)
	}
	sort.Strings(want)

	doc := loadAsyncAPI(t)
	msg := channelMessage(t, doc, channelByAddress(t, doc, kafka.DeadLetterTopic("{groupId}")))
	hptr, _ := deref(t, doc, msg+"/headers")
	o := mergeSchemas(t, doc, []string{hptr})
	var declared, required []string
	for name := range o.props {
		if name != events.HeaderContentType { // copied from the original record
			declared = append(declared, name)
		}
	}
	for name := range o.required {
		required = append(required, name)
	}
	sort.Strings(declared)
	sort.Strings(required)
	if !slices.Equal(declared, want) {
		t.Errorf("dead-letter headers declared = %v, constants = %v", declared, want)
	}
	if !slices.Equal(required, want) {
		t.Errorf("dead-letter headers required = %v, constants = %v", required, want)
	}

	// A header set as Subscriber.deadLetter writes it validates; one without
	// the attempts header does not.
	headers := map[string]string{
		events.HeaderContentType: events.ContentType,
		kafka.HeaderDLQTopic:     events.TopicUserAccountCreated,
		kafka.HeaderDLQPartition: "2",
		kafka.HeaderDLQOffset:    "1041",
		kafka.HeaderDLQGroup:     "notification-service",
		kafka.HeaderDLQError:     "invalid event: malformed JSON: syntax error at offset 3",
		kafka.HeaderDLQAttempts:  "0",
		kafka.HeaderDLQFailedAt:  time.Now().UTC().Format(time.RFC3339Nano),
	}
	for _, d := range schemaDrafts {
		s := compileAt(t, schemaCompiler(t, doc, d.draft), hptr)
		if err := s.Validate(toJSONValue(t, headers)); err != nil {
			t.Errorf("%s: dead-letter headers rejected: %v", d.name, err)
		}
		missing := maps.Clone(headers)
		delete(missing, kafka.HeaderDLQAttempts)
		if err := s.Validate(toJSONValue(t, missing)); err == nil {
			t.Errorf("%s: dead-letter headers without %s accepted", d.name, kafka.HeaderDLQAttempts)
		}
	}
}
