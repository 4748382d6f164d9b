package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/perkgo/perk/perk"
)

// ConvertOptions configures the readers of the reference implementation's
// JSON.
type ConvertOptions struct {
	// SegmentTokens bounds the token count of every segment
	// (DefaultSegmentTokens when 0).
	SegmentTokens int
	// Counter counts tokens (ApproxCounter when nil).
	Counter Counter
	// IDPrefix names records whose input has no id: "{IDPrefix}-{item}"
	// ("record" when empty; ReadBabiLong and ReadStudents use the file's
	// base name without its extension).
	IDPrefix string
	// OnBad says what to do with an item that is valid JSON but not a
	// valid item (a missing answer, say): stop with its error (the
	// default), or skip it, passing the error to OnBad.Skipped. Invalid
	// JSON always stops: the items after it cannot be found reliably.
	OnBad perk.OnBadRecord
}

func (o *ConvertOptions) normalize() error {
	if o.Counter == nil {
		o.Counter = ApproxCounter{}
	}
	if o.SegmentTokens == 0 {
		o.SegmentTokens = DefaultSegmentTokens
	}
	if o.SegmentTokens < 1 {
		return fmt.Errorf("segment limit %d tokens: must be at least 1", o.SegmentTokens)
	}
	if o.IDPrefix == "" {
		o.IDPrefix = "record"
	}
	return nil
}

// ReadBabiLong converts a BabiLong file of the reference implementation
// (see ConvertBabiLong).
func ReadBabiLong(path string, o ConvertOptions) ([]perk.Record, error) {
	return readFile(path, o, ConvertBabiLong)
}

// ReadStudents converts a student-records file of the reference
// implementation (see ConvertStudents).
func ReadStudents(path string, o ConvertOptions) ([]perk.Record, error) {
	return readFile(path, o, ConvertStudents)
}

func readFile(path string, o ConvertOptions, conv func(string, io.Reader, ConvertOptions) ([]perk.Record, error)) ([]perk.Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	defer f.Close()
	if o.IDPrefix == "" {
		base := filepath.Base(path)
		o.IDPrefix = strings.TrimSuffix(base, filepath.Ext(base))
	}
	return conv(path, f, o)
}

// babiLongJSON is one BabiLong item of the reference implementation
// ({context, question, answer, support}), or of the BabiLong release
// ({input, question, target}).
type babiLongJSON struct {
	ID       json.RawMessage `json:"id"`
	GUID     json.RawMessage `json:"guid"`
	Context  json.RawMessage `json:"context"`
	Input    json.RawMessage `json:"input"`
	Question json.RawMessage `json:"question"`
	Answer   json.RawMessage `json:"answer"`
	Target   json.RawMessage `json:"target"`
	Support  json.RawMessage `json:"support"`
}

// ConvertBabiLong reads BabiLong items and returns records. The input is
// one JSON object, a JSON array of objects, or a sequence of objects (JSONL),
// each
//
//	{"context": "one long text" | ["segment", ...], "question": "...", "answer": "...", "support": ["fact", ...]}
//
// ("input" and "target" are accepted for "context" and "answer", as in the
// BabiLong release). A context string is cut into segments of at most
// SegmentTokens tokens at sentence boundaries (Segment); each string of a
// context list is kept as one segment when it fits and cut the same way
// when it does not. "support" may also be one string of facts separated by
// line breaks. The id is "id" or "guid" when present, else
// "{IDPrefix}-{item}". Errors name the input, the line and the item.
func ConvertBabiLong(name string, r io.Reader, o ConvertOptions) ([]perk.Record, error) {
	if err := o.normalize(); err != nil {
		return nil, err
	}
	var out []perk.Record
	err := eachItem(name, r, o.OnBad, func(item int, raw json.RawMessage) error {
		var j babiLongJSON
		if err := json.Unmarshal(raw, &j); err != nil {
			return fmt.Errorf("not a BabiLong object: %w", err)
		}
		rec := perk.Record{}
		var err error
		if rec.ID, err = itemID(o.IDPrefix, item, j.ID, j.GUID); err != nil {
			return err
		}
		ctx := j.Context
		if isAbsent(ctx) {
			ctx = j.Input
		}
		if isAbsent(ctx) {
			return fmt.Errorf("record %q has no context", rec.ID)
		}
		texts, err := stringOrList(ctx)
		if err != nil {
			return fmt.Errorf("record %q: context: %w", rec.ID, err)
		}
		for _, t := range texts {
			segs, err := Segment(t, o.SegmentTokens, o.Counter)
			if err != nil {
				return fmt.Errorf("record %q: %w", rec.ID, err)
			}
			rec.Context = append(rec.Context, segs...)
		}
		if rec.Question, err = requiredText(j.Question, "question"); err != nil {
			return fmt.Errorf("record %q: %w", rec.ID, err)
		}
		ans := j.Answer
		if isAbsent(ans) {
			ans = j.Target
		}
		if rec.Answer, err = requiredText(ans, "answer"); err != nil {
			return fmt.Errorf("record %q: %w", rec.ID, err)
		}
		if rec.Support, err = supportField(j.Support); err != nil {
			return fmt.Errorf("record %q: support: %w", rec.ID, err)
		}
		if err := rec.Validate(); err != nil {
			return err
		}
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// studentsJSON is one student-records item of the reference
// implementation: a database and its questions.
type studentsJSON struct {
	ID         json.RawMessage   `json:"id"`
	GUID       json.RawMessage   `json:"guid"`
	DatabaseID json.RawMessage   `json:"database_id"`
	Database   []json.RawMessage `json:"database"`
	Questions  json.RawMessage   `json:"questions"`
	Question   json.RawMessage   `json:"question"`
}

// studentFields are the keys of a database row, in Student's order.
var studentFields = []string{"Student Id", "Student Name", "Year", "School", "Major", "Grade"}

// ConvertStudents reads student-records items and returns one record per
// question. The input is one JSON object, an array of them or a sequence
// of them (JSONL), each
//
//	{"database": [{"Student Id": "3109998", "Student Name": "...", "Year": "...", "School": "...", "Major": "...", "Grade": "72"}, ...],
//	 "questions": [{"question": "...", "answer": "...", "support": "..."}, ...]}
//
// Each database row becomes one context segment, Student.Text, in database
// order; a row longer than SegmentTokens is an error (records are never
// cut). Values may be strings or numbers. "question" is accepted for
// "questions", and the "..." placeholders of the reference's sample files
// are skipped. "support" is optional, one string or a list. The id of
// question q is "{id}-{q}", where id is "id", "guid" or "database_id" when
// present, else "{IDPrefix}-{item}".
func ConvertStudents(name string, r io.Reader, o ConvertOptions) ([]perk.Record, error) {
	if err := o.normalize(); err != nil {
		return nil, err
	}
	var out []perk.Record
	err := eachItem(name, r, o.OnBad, func(item int, raw json.RawMessage) error {
		var j studentsJSON
		if err := json.Unmarshal(raw, &j); err != nil {
			return fmt.Errorf("not a student-records object: %w", err)
		}
		id, err := itemID(o.IDPrefix, item, j.ID, j.GUID, j.DatabaseID)
		if err != nil {
			return err
		}
		if len(j.Database) == 0 {
			return fmt.Errorf("%q: no database", id)
		}
		ctx := make([]string, len(j.Database))
		for k, rowRaw := range j.Database {
			s, err := parseStudent(rowRaw)
			if err != nil {
				return fmt.Errorf("%q: database row %d: %w", id, k, err)
			}
			ctx[k] = s.Text()
			if n := o.Counter.Count(ctx[k]); n > o.SegmentTokens {
				return fmt.Errorf("%q: database row %d has %d tokens, more than the segment limit of %d", id, k, n, o.SegmentTokens)
			}
		}
		qs := j.Questions
		if isAbsent(qs) {
			qs = j.Question
		}
		if isAbsent(qs) {
			return fmt.Errorf("%q: no questions", id)
		}
		var list []json.RawMessage
		if bytes.HasPrefix(bytes.TrimSpace(qs), []byte("[")) {
			if err := json.Unmarshal(qs, &list); err != nil {
				return fmt.Errorf("%q: questions: %w", id, err)
			}
		} else {
			list = []json.RawMessage{qs}
		}
		var recs []perk.Record // the item's, kept only when all are good
		for k, qRaw := range list {
			var placeholder string
			if json.Unmarshal(qRaw, &placeholder) == nil && placeholder == "..." {
				continue
			}
			var q struct {
				Question json.RawMessage `json:"question"`
				Answer   json.RawMessage `json:"answer"`
				Support  json.RawMessage `json:"support"`
			}
			if err := json.Unmarshal(qRaw, &q); err != nil {
				return fmt.Errorf("%q: question %d: want an object {question, answer}: %w", id, k, err)
			}
			rec := perk.Record{ID: fmt.Sprintf("%s-%d", id, k), Context: ctx}
			if rec.Question, err = requiredText(q.Question, "question"); err != nil {
				return fmt.Errorf("%q: question %d: %w", id, k, err)
			}
			if rec.Answer, err = requiredText(q.Answer, "answer"); err != nil {
				return fmt.Errorf("%q: question %d: %w", id, k, err)
			}
			if rec.Support, err = stringOrListOpt(q.Support); err != nil {
				return fmt.Errorf("%q: question %d: support: %w", id, k, err)
			}
			if err := rec.Validate(); err != nil {
				return err
			}
			recs = append(recs, rec)
		}
		if len(recs) == 0 {
			return fmt.Errorf("%q: no questions", id)
		}
		out = append(out, recs...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// parseStudent reads one database row.
func parseStudent(raw json.RawMessage) (Student, error) {
	var row map[string]json.RawMessage
	if err := json.Unmarshal(raw, &row); err != nil {
		return Student{}, fmt.Errorf("want an object: %w", err)
	}
	vals := make([]string, len(studentFields))
	for k, f := range studentFields {
		v, err := requiredText(row[f], f)
		if err != nil {
			return Student{}, err
		}
		vals[k] = v
	}
	return Student{ID: vals[0], Name: vals[1], Year: vals[2], School: vals[3], Major: vals[4], Grade: vals[5]}, nil
}

// eachItem calls fn for every JSON object of the input: a single object,
// the elements of a top-level array, or a sequence of values (JSONL).
// Errors are prefixed "name:line: item k: "; an item fn rejects stops the
// reading, or with bad.Skip is reported to bad.Skipped and left out.
func eachItem(name string, r io.Reader, bad perk.OnBadRecord, fn func(item int, raw json.RawMessage) error) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	item, skipped := 0, 0
	handle := func(off int64, raw json.RawMessage) error {
		err := fn(item, raw)
		if err != nil {
			err = fmt.Errorf("%s:%d: item %d: %w", name, lineAt(data, off), item, err)
			if !bad.Skip {
				return err
			}
			skipped++
			if bad.Skipped != nil {
				bad.Skipped(err)
			}
		}
		item++
		return nil
	}
	for {
		off := dec.InputOffset()
		var raw json.RawMessage
		tok := bytes.TrimSpace(data[off:])
		if len(tok) > 0 && tok[0] == '[' {
			if _, err := dec.Token(); err != nil {
				return fmt.Errorf("%s:%d: %w", name, lineAt(data, off), err)
			}
			for dec.More() {
				off := dec.InputOffset()
				if err := dec.Decode(&raw); err != nil {
					return fmt.Errorf("%s:%d: invalid JSON: %w", name, lineAt(data, off), err)
				}
				if err := handle(off, raw); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return fmt.Errorf("%s:%d: invalid JSON: %w", name, lineAt(data, dec.InputOffset()), err)
			}
			continue
		}
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("%s:%d: invalid JSON: %w", name, lineAt(data, off), err)
		}
		if err := handle(off, raw); err != nil {
			return err
		}
	}
	switch {
	case item == 0:
		return fmt.Errorf("%s: no items", name)
	case skipped == item:
		return fmt.Errorf("%s: no valid items (%d skipped)", name, skipped)
	}
	return nil
}

// lineAt is the 1-based line of the first non-space byte at or after off.
func lineAt(data []byte, off int64) int {
	o := int(off)
	for o < len(data) && (data[o] == ' ' || data[o] == '\t' || data[o] == '\n' || data[o] == '\r' || data[o] == ',') {
		o++
	}
	return 1 + bytes.Count(data[:min(o, len(data))], []byte("\n"))
}

func isAbsent(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

// itemID returns the first id present (a string or a number), else
// "{prefix}-{item}".
func itemID(prefix string, item int, ids ...json.RawMessage) (string, error) {
	for _, raw := range ids {
		if isAbsent(raw) {
			continue
		}
		s, err := textValue(raw)
		if err != nil {
			return "", fmt.Errorf("id: %w", err)
		}
		if s != "" {
			return s, nil
		}
	}
	return fmt.Sprintf("%s-%d", prefix, item), nil
}

// textValue reads a JSON string, or a number as written.
func textValue(raw json.RawMessage) (string, error) {
	t := bytes.TrimSpace(raw)
	if len(t) > 0 && t[0] == '"' {
		var s string
		if err := json.Unmarshal(t, &s); err != nil {
			return "", err
		}
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(t, &n); err != nil {
		return "", fmt.Errorf("want a string or a number, got %.40s", t)
	}
	return n.String(), nil
}

// requiredText reads a field that must be a string or a number.
func requiredText(raw json.RawMessage, field string) (string, error) {
	if isAbsent(raw) {
		return "", fmt.Errorf("no %q", field)
	}
	s, err := textValue(raw)
	if err != nil {
		return "", fmt.Errorf("%q: %w", field, err)
	}
	return s, nil
}

// stringOrList reads a string or a list of strings.
func stringOrList(raw json.RawMessage) ([]string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return []string{s}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("want a string or a list of strings")
	}
	return list, nil
}

// stringOrListOpt reads an optional string or list of strings; absent and
// empty give nil.
func stringOrListOpt(raw json.RawMessage) ([]string, error) {
	if isAbsent(raw) {
		return nil, nil
	}
	list, err := stringOrList(raw)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range list {
		if strings.TrimSpace(s) != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// supportField reads BabiLong support: a list of facts, or one string of
// facts separated by line breaks.
func supportField(raw json.RawMessage) ([]string, error) {
	list, err := stringOrListOpt(raw)
	if err != nil || len(list) != 1 {
		return list, err
	}
	var out []string
	for _, line := range strings.Split(list[0], "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out, nil
}
