package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/events"
)

// Personal data planted in the documents below. No Decode error may repeat
// any of it: errors end up in logs and in the dlq-error header.
const (
	piiEmail      = "zebediah.quillfeather@pii.example"
	piiFirstName  = "Zebediah"
	piiLastName   = "Quillfeather"
	piiUserID     = "7d4f0c1e-5b8a-4c29-9e61-0a3b2c4d5e6f"
	piiNonce      = "c2VjcmV0bm9uY2Ux"                         // 12 bytes
	piiCiphertext = "Y2lwaGVydGV4dC1vZi10aGUtY29kZS0xMjM0NTY=" // 29 bytes
)

var piiMarkers = []string{piiEmail, piiFirstName, piiLastName, strings.ToLower(piiFirstName), piiUserID, piiNonce, piiCiphertext}

// createdDoc and verifiedDoc return fresh, valid event documents as maps, for
// the decode tests to break one piece at a time.
func createdDoc() map[string]any {
	return map[string]any{
		"specversion": "1.0", "id": "0b1d2f4e-9c7a-4e3b-8f60-1a2b3c4d5e6f", "source": "countersign/userapi",
		"type": "user_account_created", "time": "2026-05-04T09:12:33.120384Z", "datacontenttype": "application/json",
		"data": map[string]any{
			"user_id": piiUserID, "email": piiEmail, "first_name": piiFirstName, "last_name": piiLastName,
			"expires_at": "2026-05-04T09:27:33Z",
			"encrypted_code": map[string]any{
				"key_id": "k20260501-3dccd0", "nonce": piiNonce, "ciphertext": piiCiphertext,
			},
		},
	}
}

func verifiedDoc() map[string]any {
	return map[string]any{
		"specversion": "1.0", "id": "6a0e9d3c-2b1f-4a8e-b7c6-5d4e3f2a1b0c", "source": "countersign/userapi",
		"type": "user_account_verified", "time": "2026-05-04T09:14:02.5Z", "datacontenttype": "application/json",
		"data": map[string]any{
			"user_id": piiUserID, "email": piiEmail, "first_name": piiFirstName, "last_name": piiLastName,
			"verified_at": "2026-05-04T09:14:02.499871Z",
		},
	}
}

func marshalDoc(tb testing.TB, m map[string]any) []byte {
	tb.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func dataOf(m map[string]any) map[string]any { return m["data"].(map[string]any) }

func sealedOf(m map[string]any) map[string]any {
	return dataOf(m)["encrypted_code"].(map[string]any)
}

// decodeProblem says what is wrong with Decode's answer for a document that
// must be rejected, or "" when the answer is right.
func decodeProblem(value []byte) string {
	_, err := events.Decode(value)
	if err == nil {
		return "accepted"
	}
	var de *events.DecodeError
	if !errors.As(err, &de) {
		return "error is not a *DecodeError: " + err.Error()
	}
	if !errors.Is(err, events.ErrInvalidEvent) {
		return "error does not match ErrInvalidEvent: " + err.Error()
	}
	for _, marker := range piiMarkers {
		if strings.Contains(err.Error(), marker) {
			return "error quotes personal data " + marker + ": " + err.Error()
		}
	}
	return ""
}

// checkFixedBug guards the fix of a bug found earlier: problem must be empty.
func checkFixedBug(t *testing.T, bug, problem string) {
	t.Helper()
	if problem != "" {
		t.Errorf("regression of %q: %s", bug, problem)
	}
}

const (
	bugTrailingBracket = "Decode accepts a stray } or ] after the document (dec.More is false there)"
	bugQuotedAttribute = "Decode quotes the type/specversion/datacontenttype value in its error"
	bugYearRange       = "Decode accepts a time that Event.Marshal cannot encode (UTC year outside 0..9999)"
)

func TestDecodeRejectsInvalidEvents(t *testing.T) {
	type mutation func(m map[string]any)
	del := func(key string) mutation { return func(m map[string]any) { delete(m, key) } }
	set := func(key string, v any) mutation { return func(m map[string]any) { m[key] = v } }
	delData := func(key string) mutation { return func(m map[string]any) { delete(dataOf(m), key) } }
	setData := func(key string, v any) mutation { return func(m map[string]any) { dataOf(m)[key] = v } }
	delSealed := func(key string) mutation { return func(m map[string]any) { delete(sealedOf(m), key) } }
	setSealed := func(key string, v any) mutation { return func(m map[string]any) { sealedOf(m)[key] = v } }

	type docCase struct {
		name   string
		base   func() map[string]any
		mutate mutation
		bug    string
	}
	var cases []docCase
	both := func(name string, m mutation, bug string) {
		cases = append(cases,
			docCase{"created/" + name, createdDoc, m, bug},
			docCase{"verified/" + name, verifiedDoc, m, bug})
	}

	// Envelope.
	for _, f := range []string{"specversion", "id", "source", "type", "time", "data"} {
		both("missing "+f, del(f), "")
		both("null "+f, set(f, nil), "")
		if f != "data" {
			both("empty "+f, set(f, ""), "")
		}
	}
	both("specversion 0.3", set("specversion", "0.3"), "")
	both("specversion 1", set("specversion", "1"), "")
	both("specversion as number", set("specversion", 1.0), "")
	both("unknown type", set("type", "user_account_deleted"), "")
	both("type in other case", set("type", "USER_ACCOUNT_CREATED"), "")
	both("type as number", set("type", 7), "")
	both("datacontenttype text/plain", set("datacontenttype", "text/plain"), "")
	both("id as number", set("id", 42), "")
	both("source as object", set("source", map[string]any{"a": 1}), "")
	both("time as number", set("time", 1746349953), "")
	both("time in words", set("time", "yesterday"), "")
	both("time month 13", set("time", "2026-13-04T09:12:33Z"), "")
	both("time with a space", set("time", "2026-05-04 09:12:33Z"), "")
	both("time without zone", set("time", "2026-05-04T09:12:33"), "")
	both("time holding an address", set("time", piiEmail), "")
	both("data as string", set("data", piiEmail), "")
	both("data as array", set("data", []any{1}), "")
	both("data empty object", set("data", map[string]any{}), "")
	// The type, specversion and datacontenttype values are quoted in the
	// error (truncated to 64 bytes). Harmless for real producers, but a
	// malformed record that carries an address there leaks it.
	both("type holding an address", set("type", piiEmail), bugQuotedAttribute)
	both("specversion holding an address", set("specversion", piiEmail), bugQuotedAttribute)
	both("datacontenttype holding an address", set("datacontenttype", piiEmail), bugQuotedAttribute)

	// Data common to both types.
	for _, f := range []string{"user_id", "email", "first_name", "last_name"} {
		both("missing data."+f, delData(f), "")
		both("empty data."+f, setData(f, ""), "")
		both("null data."+f, setData(f, nil), "")
	}
	both("data.email as number", setData("email", 12345678), "")
	both("data.first_name as object", setData("first_name", map[string]any{"x": piiFirstName}), "")
	both("data.user_id as array", setData("user_id", []any{piiUserID}), "")

	// user_account_created.
	created := func(name string, m mutation) { cases = append(cases, docCase{"created/" + name, createdDoc, m, ""}) }
	created("missing data.expires_at", delData("expires_at"))
	created("data.expires_at not RFC 3339", setData("expires_at", "04/05/2026 09:27"))
	created("data.expires_at holding an address", setData("expires_at", piiEmail))
	created("data.expires_at as bool", setData("expires_at", true))
	created("missing data.encrypted_code", delData("encrypted_code"))
	created("data.encrypted_code as plain string", setData("encrypted_code", "482913"))
	for _, f := range []string{"key_id", "nonce", "ciphertext"} {
		created("missing data.encrypted_code."+f, delSealed(f))
		created("empty data.encrypted_code."+f, setSealed(f, ""))
	}
	created("data.encrypted_code.nonce not base64", setSealed("nonce", piiEmail))
	created("data.encrypted_code.nonce as number", setSealed("nonce", 7))
	created("verified data under created type", func(m map[string]any) { m["data"] = dataOf(verifiedDoc()) })

	// user_account_verified.
	verified := func(name string, m mutation) { cases = append(cases, docCase{"verified/" + name, verifiedDoc, m, ""}) }
	verified("missing data.verified_at", delData("verified_at"))
	verified("data.verified_at holding an address", setData("verified_at", piiEmail))
	verified("data.verified_at without zone", setData("verified_at", "2026-05-04T09:14:02"))

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.base()
			tc.mutate(m)
			problem := decodeProblem(marshalDoc(t, m))
			if tc.bug != "" {
				checkFixedBug(t, tc.bug, problem)
				return
			}
			if problem != "" {
				t.Errorf("%s: %s", marshalDoc(t, m), problem)
			}
		})
	}
}

func TestDecodeRejectsMalformedJSON(t *testing.T) {
	valid := marshalDoc(t, createdDoc())
	cases := []struct {
		name  string
		value []byte
		bug   string
	}{
		{"empty", nil, ""},
		{"whitespace", []byte(" \n\t"), ""},
		{"not JSON", []byte("not json"), ""},
		{"JSON null", []byte("null"), ""},
		{"JSON array", []byte(`[{"specversion":"1.0"}]`), ""},
		{"JSON string holding an address", []byte(`"` + piiEmail + `"`), ""},
		{"bare word holding an address", []byte(`{"specversion":"1.0","id":` + piiEmail + `}`), ""},
		{"single quotes", bytes.ReplaceAll(valid, []byte(`"`), []byte(`'`)), ""},
		{"trailing comma", append(valid[:len(valid)-1:len(valid)-1], []byte(",}")...), ""},
		{"trailing word", append(bytes.Clone(valid), " x"...), ""},
		{"two documents", append(bytes.Clone(valid), valid...), ""},
		{"two documents on two lines", append(append(bytes.Clone(valid), '\n'), valid...), ""},
		{"trailing brace", append(bytes.Clone(valid), '}'), bugTrailingBracket},
		{"trailing bracket", append(bytes.Clone(valid), ']'), bugTrailingBracket},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			problem := decodeProblem(tc.value)
			if tc.bug != "" {
				checkFixedBug(t, tc.bug, problem)
				return
			}
			if problem != "" {
				t.Errorf("%q: %s", tc.value, problem)
			}
		})
	}

	// Every strict prefix of a valid document is a truncated record.
	for _, base := range [][]byte{valid, marshalDoc(t, verifiedDoc())} {
		for n := range len(base) {
			if problem := decodeProblem(base[:n]); problem != "" {
				t.Errorf("truncated to %d of %d bytes: %s", n, len(base), problem)
			}
		}
	}
}

func TestDecodeAcceptsValidEvents(t *testing.T) {
	withoutContentType := createdDoc()
	delete(withoutContentType, "datacontenttype")
	withExtras := verifiedDoc()
	withExtras["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	dataOf(withExtras)["locale"] = "en-GB"
	offsetTime := verifiedDoc()
	offsetTime["time"] = "2026-05-04T11:14:02.5+02:00"

	for name, value := range map[string][]byte{
		"created":  marshalDoc(t, createdDoc()),
		"verified": marshalDoc(t, verifiedDoc()),
		// CloudEvents: datacontenttype is optional; JSON is implied.
		"created without datacontenttype": marshalDoc(t, withoutContentType),
		// Consumers ignore what they do not know (forward compatibility).
		"unknown attribute and data field": marshalDoc(t, withExtras),
		"time with an offset":              marshalDoc(t, offsetTime),
		"trailing newline":                 append(marshalDoc(t, createdDoc()), '\n'),
	} {
		t.Run(name, func(t *testing.T) {
			e, err := events.Decode(value)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if e.SpecVersion != "1.0" || e.Source != "countersign/userapi" || e.ID == "" || e.Time.IsZero() {
				t.Errorf("decoded envelope %+v", e)
			}
			switch e.Type {
			case events.TopicUserAccountCreated:
				d, err := e.UserAccountCreated()
				if err != nil || d.Email != piiEmail || d.EncryptedCode.KeyID != "k20260501-3dccd0" || len(d.EncryptedCode.Nonce) != 12 {
					t.Errorf("data = %+v, %v", d, err)
				}
			case events.TopicUserAccountVerified:
				d, err := e.UserAccountVerified()
				if err != nil || d.UserID != piiUserID || d.VerifiedAt.IsZero() {
					t.Errorf("data = %+v, %v", d, err)
				}
			default:
				t.Errorf("type %q", e.Type)
			}
		})
	}
	e, err := events.Decode(marshalDoc(t, offsetTime))
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 5, 4, 9, 14, 2, 5e8, time.UTC); !e.Time.Equal(want) {
		t.Errorf("time = %v, want %v", e.Time, want)
	}
	out, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte(`"time":"2026-05-04T09:14:02.5Z"`)) {
		t.Errorf("Marshal did not turn the time into UTC: %s", out)
	}
}

// A time the decoder accepts must survive Event.Marshal, or a consumer that
// re-publishes a decoded event fails on a record that passed validation.
func TestDecodeAcceptsOnlyMarshalableTimes(t *testing.T) {
	for _, ts := range []string{"0000-01-01T00:00:00+00:01", "9999-12-31T23:59:59-01:00"} {
		t.Run(ts, func(t *testing.T) {
			m := verifiedDoc()
			m["time"] = ts
			e, err := events.Decode(marshalDoc(t, m))
			problem := ""
			if err == nil {
				if _, merr := e.Marshal(); merr != nil {
					problem = "decoded, then Marshal failed: " + merr.Error()
				}
			}
			checkFixedBug(t, bugYearRange, problem)
		})
	}
}

func newEventTestKeyring(tb testing.TB) *events.Keyring {
	tb.Helper()
	k, err := events.NewRandomKeyring()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func TestEventUserAccountCreatedRoundTrip(t *testing.T) {
	k := newEventTestKeyring(t)
	userID := uuid.NewString()
	const rawEmail = "  Ada@Example.COM "
	expires := time.Date(2026, 5, 4, 11, 27, 33, 120211000, time.FixedZone("CEST", 2*3600))
	cd := events.UserAccountCreated{
		UserID: userID, Email: rawEmail, FirstName: "Ada", LastName: "Lovelace",
		ExpiresAt: expires,
	}
	sealed, err := k.Seal("913 402", cd)
	if err != nil {
		t.Fatal(err)
	}
	cd.EncryptedCode = sealed
	in := cd
	before := time.Now()
	e, err := events.NewUserAccountCreated(in)
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()

	if e.Key != "ada@example.com" {
		t.Errorf("Key = %q, want the normalized address", e.Key)
	}
	if e.SpecVersion != "1.0" || e.Source != "countersign/userapi" || e.Type != "user_account_created" || e.DataContentType != "application/json" {
		t.Errorf("envelope = %+v", e)
	}
	if id, err := uuid.Parse(e.ID); err != nil || id.Version() != 4 || id.Variant() != uuid.RFC4122 {
		t.Errorf("id %q is not a random (v4) UUID: %v", e.ID, err)
	}
	if e.Time.Location() != time.UTC || e.Time.Before(before.Add(-time.Second)) || e.Time.After(after.Add(time.Second)) {
		t.Errorf("time = %v, want now in UTC", e.Time)
	}

	doc, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(doc, &raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw["Key"]; ok {
		t.Error("the record key leaked into the JSON document")
	}
	for _, ts := range []string{raw["time"].(string), dataOf(raw)["expires_at"].(string)} {
		if !strings.HasSuffix(ts, "Z") {
			t.Errorf("time %q is not UTC (Z)", ts)
		}
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("time %q is not RFC 3339: %v", ts, err)
		}
	}
	if got := dataOf(raw)["email"]; got != "ada@example.com" {
		t.Errorf("data.email = %v, want the normalized address", got)
	}
	if bytes.Contains(doc, []byte("913 402")) {
		t.Error("the plain code is in the document")
	}

	got, err := events.Decode(doc)
	if err != nil {
		t.Fatalf("Decode(Marshal(e)): %v", err)
	}
	// The key travels as the Kafka record key, not in the document.
	if got.Key != "" {
		t.Errorf("decoded Key = %q, want empty", got.Key)
	}
	got.Key = e.Key
	if !got.Time.Equal(e.Time) {
		t.Errorf("time %v != %v", got.Time, e.Time)
	}
	got.Time = e.Time
	if !reflect.DeepEqual(got, e) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, e)
	}

	d, err := got.UserAccountCreated()
	if err != nil {
		t.Fatal(err)
	}
	want := in
	want.Email = "ada@example.com"
	if !d.ExpiresAt.Equal(expires) || d.ExpiresAt.Location() != time.UTC {
		t.Errorf("expires_at = %v, want %v in UTC", d.ExpiresAt, expires)
	}
	d.ExpiresAt, want.ExpiresAt = time.Time{}, time.Time{}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("data:\n got %+v\nwant %+v", d, want)
	}
	d.ExpiresAt = expires
	code, err := k.Open(d)
	if err != nil || code != "913 402" {
		t.Errorf("Open = %q, %v", code, err)
	}
	if _, err := got.UserAccountVerified(); !errors.Is(err, events.ErrInvalidEvent) {
		t.Errorf("UserAccountVerified on a created event: %v, want ErrInvalidEvent", err)
	}
}

func TestEventUserAccountVerifiedRoundTrip(t *testing.T) {
	in := events.UserAccountVerified{
		UserID: uuid.NewString(), Email: "\tAda@Example.COM\n", FirstName: "Ada", LastName: "Lovelace",
		VerifiedAt: time.Now().In(time.FixedZone("EST", -5*3600)),
	}
	e, err := events.NewUserAccountVerified(in)
	if err != nil {
		t.Fatal(err)
	}
	if e.Key != "ada@example.com" || e.Type != events.TopicUserAccountVerified {
		t.Errorf("key %q type %q", e.Key, e.Type)
	}
	doc, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte(`"email":"ada@example.com"`)) {
		t.Errorf("data email not normalized: %s", doc)
	}
	got, err := events.Decode(doc)
	if err != nil {
		t.Fatal(err)
	}
	d, err := got.UserAccountVerified()
	if err != nil {
		t.Fatal(err)
	}
	if d.UserID != in.UserID || d.Email != "ada@example.com" || d.FirstName != "Ada" || d.LastName != "Lovelace" {
		t.Errorf("data = %+v", d)
	}
	if !d.VerifiedAt.Equal(in.VerifiedAt) || d.VerifiedAt.Location() != time.UTC {
		t.Errorf("verified_at = %v, want %v in UTC", d.VerifiedAt, in.VerifiedAt)
	}
	if _, err := got.UserAccountCreated(); !errors.Is(err, events.ErrInvalidEvent) {
		t.Errorf("UserAccountCreated on a verified event: %v, want ErrInvalidEvent", err)
	}
}

func TestNewEventsGetDistinctIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		e, err := events.NewUserAccountVerified(events.UserAccountVerified{
			UserID: "u", Email: "a@example.com", FirstName: "A", LastName: "B", VerifiedAt: time.Now(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if seen[e.ID] {
			t.Fatalf("id %s issued twice", e.ID)
		}
		seen[e.ID] = true
	}
}

func TestNewEventsRefuseIncompleteData(t *testing.T) {
	k := newEventTestKeyring(t)
	cd := events.UserAccountCreated{UserID: "u", Email: "a@example.com", FirstName: "A", LastName: "B",
		ExpiresAt: time.Now()}
	sealed, err := k.Seal("123456", cd)
	if err != nil {
		t.Fatal(err)
	}
	cd.EncryptedCode = sealed
	full := cd
	for name, mutate := range map[string]func(*events.UserAccountCreated){
		"user_id":     func(d *events.UserAccountCreated) { d.UserID = "" },
		"email":       func(d *events.UserAccountCreated) { d.Email = "" },
		"blank email": func(d *events.UserAccountCreated) { d.Email = "   " },
		"first_name":  func(d *events.UserAccountCreated) { d.FirstName = "" },
		"last_name":   func(d *events.UserAccountCreated) { d.LastName = "" },
		"expires_at":  func(d *events.UserAccountCreated) { d.ExpiresAt = time.Time{} },
		"sealed code": func(d *events.UserAccountCreated) { d.EncryptedCode = events.SealedCode{} },
		"nonce":       func(d *events.UserAccountCreated) { d.EncryptedCode.Nonce = nil },
	} {
		d := full
		d.EncryptedCode.Nonce = bytes.Clone(sealed.Nonce)
		mutate(&d)
		if _, err := events.NewUserAccountCreated(d); !errors.Is(err, events.ErrInvalidEvent) {
			t.Errorf("created without %s: err = %v, want ErrInvalidEvent", name, err)
		}
	}
	if _, err := events.NewUserAccountCreated(full); err != nil {
		t.Errorf("complete data refused: %v", err)
	}
	if _, err := events.NewUserAccountVerified(events.UserAccountVerified{UserID: "u", Email: "a@example.com", FirstName: "A", LastName: "B"}); !errors.Is(err, events.ErrInvalidEvent) {
		t.Errorf("verified without verified_at: err = %v, want ErrInvalidEvent", err)
	}
}

// FuzzDecode: Decode never panics, every error is a *DecodeError matching
// ErrInvalidEvent, and whatever it accepts survives Marshal and a second
// Decode unchanged.
func FuzzDecode(f *testing.F) {
	f.Add(marshalDoc(f, createdDoc()))
	f.Add(marshalDoc(f, verifiedDoc()))
	k := newEventTestKeyring(f)
	cd := events.UserAccountCreated{UserID: "u", Email: "A@example.com",
		FirstName: "A", LastName: "B", ExpiresAt: time.Now()}
	sealed, err := k.Seal("123456", cd)
	if err != nil {
		f.Fatal(err)
	}
	cd.EncryptedCode = sealed
	e, err := events.NewUserAccountCreated(cd)
	if err != nil {
		f.Fatal(err)
	}
	built, err := e.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(built)
	f.Add([]byte(`{"specversion":"1.0","id":"x","source":"s","type":"user_account_verified","time":"2026-05-04T11:14:02+02:00","data":{"user_id":"u","email":"e","first_name":"f","last_name":"l","verified_at":"2026-05-04T09:14:02Z","x":[1,"<&>"]},"ext":{"a":null}}`))
	f.Add([]byte(`{"specversion":"1.0"}`))
	f.Add([]byte(`{`))
	f.Add([]byte(`null`))

	f.Fuzz(func(t *testing.T, value []byte) {
		e, err := events.Decode(value)
		if err != nil {
			var de *events.DecodeError
			if !errors.As(err, &de) || !errors.Is(err, events.ErrInvalidEvent) {
				t.Fatalf("error %v (%T) is not a *DecodeError matching ErrInvalidEvent", err, err)
			}
			return
		}
		out, err := e.Marshal()
		if err != nil {
			t.Fatalf("accepted %q, but Marshal failed: %v", value, err)
		}
		again, err := events.Decode(out)
		if err != nil {
			t.Fatalf("accepted %q, but not its re-encoding %q: %v", value, out, err)
		}
		if !again.Time.Equal(e.Time) {
			t.Fatalf("time %v became %v", e.Time, again.Time)
		}
		var d1, d2 any
		if err := json.Unmarshal(e.Data, &d1); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(again.Data, &d2); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(d1, d2) {
			t.Fatalf("data %s became %s", e.Data, again.Data)
		}
		e.Time, e.Data, again.Time, again.Data = time.Time{}, nil, time.Time{}, nil
		if !reflect.DeepEqual(e, again) {
			t.Fatalf("envelope %+v became %+v", e, again)
		}
	})
}

// The CloudEvents distributed-tracing extension travels as top-level
// attributes, is kept by Decode as sent (even malformed: it only affects
// tracing), and is left out when empty.
func TestTraceExtensionRoundTrip(t *testing.T) {
	e, err := events.NewUserAccountVerified(events.UserAccountVerified{
		UserID: "u1", Email: "a@example.com", FirstName: "A", LastName: "B", VerifiedAt: time.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(plain), "traceparent") || strings.Contains(string(plain), "tracestate") {
		t.Errorf("an event without trace context names it: %s", plain)
	}
	for _, tc := range []struct{ parent, state string }{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "congo=t61rcWkgMzE"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", ""},
		{"not a traceparent", ""},
	} {
		e.TraceParent, e.TraceState = tc.parent, tc.state
		doc, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var top map[string]any
		if err := json.Unmarshal(doc, &top); err != nil {
			t.Fatal(err)
		}
		if top["traceparent"] != tc.parent {
			t.Errorf("traceparent attribute = %v, want %q", top["traceparent"], tc.parent)
		}
		got, err := events.Decode(doc)
		if err != nil {
			t.Fatalf("decode with traceparent %q: %v", tc.parent, err)
		}
		if got.TraceParent != tc.parent || got.TraceState != tc.state {
			t.Errorf("decoded trace context %q, %q; want %q, %q", got.TraceParent, got.TraceState, tc.parent, tc.state)
		}
	}
}
