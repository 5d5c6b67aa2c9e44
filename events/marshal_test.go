package events

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// referenceMarshal is what Marshal replaced: its bytes are the contract.
func referenceMarshal(e Event) ([]byte, error) {
	e.Time = e.Time.UTC()
	return json.Marshal(e)
}

func checkMarshal(t *testing.T, e Event) {
	t.Helper()
	want, wantErr := referenceMarshal(e)
	got, err := e.Marshal()
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("error %v, encoding/json's %v", err, wantErr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Marshal differs from encoding/json\n got %s\nwant %s", got, want)
	}
}

func TestMarshalIsEncodingJSON(t *testing.T) {
	e, err := NewUserAccountVerified(UserAccountVerified{UserID: "u-1", Email: "ada@example.com",
		FirstName: "Ada", LastName: "Lovelace", VerifiedAt: time.Now(), Locale: "zh-CN"})
	if err != nil {
		t.Fatal(err)
	}
	checkMarshal(t, e)
	for _, s := range []string{"", "plain", `quote " and \ backslash`, "<script>&amp;</script>", "tab\tnew\nline\rcr\bbs\fff",
		"\x00\x01\x1f\x7f", "é 例子 😀", "\u2028\u2029", "bad \xff utf8 \xe2\x80", "\xe2\x80\xa8"} {
		f := e
		f.ID, f.TraceParent, f.TraceState, f.Source = s, s, s, s
		checkMarshal(t, f)
	}
	for _, data := range []string{"", "null", `{"a":1}`, `{ "a" : 1 }`, `{"a":"<b>"}`, `{"a":"\u2028"}`, `{"a":"x y"}`, `{"a":`, `[1,2`, "\xff"} {
		f := e
		f.Data = json.RawMessage(data)
		checkMarshal(t, f)
	}
	for _, tm := range []time.Time{{}, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 30, 15, 4, 5, 123456789, time.FixedZone("X", 3600))} {
		f := e
		f.Time = tm
		checkMarshal(t, f)
	}
}

func FuzzMarshalIsEncodingJSON(f *testing.F) {
	f.Add("id", "traceparent", `{"email":"a@b.c"}`, int64(1764500000123456789))
	f.Add("<&>", "\u2028", `{"x":"<"}`, int64(-62135596800000000))
	f.Add("\xff", "", "not json", int64(0))
	f.Fuzz(func(t *testing.T, id, tp, data string, nanos int64) {
		checkMarshal(t, Event{SpecVersion: SpecVersion, ID: id, Source: Source, Type: TopicUserAccountCreated,
			Time: time.Unix(0, nanos), DataContentType: DataContentType, Data: json.RawMessage(data), TraceParent: tp, TraceState: id})
	})
}
