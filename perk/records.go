package perk

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// Record is one PERK problem: a context given as a list of segments, a
// question about it and the answer; Support optionally lists the context
// facts the answer rests on, for the support target format
// (Encoder.SupportTarget), which writes an empty support block,
// "<support></support>\n<output>{answer}</output>", for a record with none.
type Record struct {
	// ID names the record in errors and reports.
	ID string
	// Context is the list of context segments (documents).
	Context []string
	// Question is asked without the context in the prompt.
	Question string
	// Answer is the reference answer.
	Answer string
	// Support lists supporting facts; nil when the record has none (e.g.
	// an aggregate question whose support would be every record).
	Support []string
}

// recordJSON is the on-disk form of a Record.
type recordJSON struct {
	ID       json.RawMessage `json:"id"`
	Context  *[]string       `json:"context"`
	Question *string         `json:"question"`
	Answer   *string         `json:"answer"`
	Support  *[]string       `json:"support"`
}

// maxRecordLine bounds one JSONL line (64 MiB), so a corrupt file cannot
// make the reader allocate without limit.
const maxRecordLine = 64 << 20

// ReadRecords reads a JSONL file of records (see ParseRecords).
func ReadRecords(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("records: %w", err)
	}
	defer f.Close()
	return ParseRecords(path, f)
}

// ParseRecords decodes JSONL records, one JSON object per line:
//
//	{"id": "...", "context": ["...", ...], "question": "...", "answer": "...", "support": ["...", ...]}
//
// Blank lines are skipped; "support" is optional and other keys are
// ignored; "id" may be a string or a number. Every error names the input
// and the line ("name:line: ...").
func ParseRecords(name string, r io.Reader) ([]Record, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), maxRecordLine)
	var out []Record
	line := 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		rec, err := parseRecord(text)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%s:%d: line longer than %d bytes", name, line+1, maxRecordLine)
		}
		return nil, fmt.Errorf("%s:%d: %w", name, line+1, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no records", name)
	}
	return out, nil
}

func parseRecord(text []byte) (Record, error) {
	var j recordJSON
	dec := json.NewDecoder(bytes.NewReader(text))
	if err := dec.Decode(&j); err != nil {
		return Record{}, fmt.Errorf("invalid record: %w", err)
	}
	if dec.More() {
		return Record{}, fmt.Errorf("invalid record: more than one JSON value on the line")
	}
	var rec Record
	id := bytes.TrimSpace(j.ID)
	switch {
	case len(id) == 0 || string(id) == "null":
		return Record{}, fmt.Errorf("record has no id")
	case id[0] == '"':
		if err := json.Unmarshal(id, &rec.ID); err != nil {
			return Record{}, fmt.Errorf("record id: %w", err)
		}
	default:
		if _, err := strconv.ParseFloat(string(id), 64); err != nil {
			return Record{}, fmt.Errorf("record id %s is neither a string nor a number", id)
		}
		rec.ID = string(id)
	}
	if j.Context == nil {
		return Record{}, fmt.Errorf("record %q has no context", rec.ID)
	}
	if j.Question == nil {
		return Record{}, fmt.Errorf("record %q has no question", rec.ID)
	}
	if j.Answer == nil {
		return Record{}, fmt.Errorf("record %q has no answer", rec.ID)
	}
	rec.Context, rec.Question, rec.Answer = *j.Context, *j.Question, *j.Answer
	if j.Support != nil {
		rec.Support = *j.Support
	}
	return rec, rec.Validate()
}

// Validate checks what every use of a record needs: an id, at least one
// non-empty context segment, and an answer.
func (r Record) Validate() error {
	if r.ID == "" {
		return fmt.Errorf("record has an empty id")
	}
	if len(r.Context) == 0 {
		return fmt.Errorf("record %q: empty context", r.ID)
	}
	for i, s := range r.Context {
		if len(bytes.TrimSpace([]byte(s))) == 0 {
			return fmt.Errorf("record %q: context segment %d is empty", r.ID, i)
		}
	}
	if len(bytes.TrimSpace([]byte(r.Answer))) == 0 {
		return fmt.Errorf("record %q: empty answer", r.ID)
	}
	return nil
}
