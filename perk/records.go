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

// OnBadRecord says what reading a records file does with a line that is
// not a valid record: stop with its error (the default), or skip it and
// report it to Skipped.
type OnBadRecord struct {
	// Skip skips bad lines instead of stopping at the first.
	Skip bool
	// Skipped, when set, receives each skipped line's error ("name:line: ...").
	Skipped func(error)
}

// ParseOnBadRecord reads the --on-bad-record flag value: stop or skip.
func ParseOnBadRecord(s string) (OnBadRecord, error) {
	switch s {
	case "stop", "":
		return OnBadRecord{}, nil
	case "skip":
		return OnBadRecord{Skip: true}, nil
	}
	return OnBadRecord{}, fmt.Errorf("--on-bad-record %q: want stop or skip", s)
}

// ReadRecords reads a JSONL file of records (see ParseRecords), stopping
// at the first bad line.
func ReadRecords(path string) ([]Record, error) {
	return ReadRecordsWith(path, OnBadRecord{})
}

// ReadRecordsWith reads a JSONL file of records, handling bad lines per bad.
func ReadRecordsWith(path string, bad OnBadRecord) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("records: %w", err)
	}
	defer f.Close()
	return parseRecords(path, f, bad)
}

// ParseRecords decodes JSONL records, one JSON object per line:
//
//	{"id": "...", "context": ["...", ...], "question": "...", "answer": "...", "support": ["...", ...]}
//
// Blank lines are skipped; "support" is optional and other keys are
// ignored; "id" may be a string or a number. Every error names the input
// and the line ("name:line: ...").
func ParseRecords(name string, r io.Reader) ([]Record, error) {
	return parseRecords(name, r, OnBadRecord{})
}

func parseRecords(name string, r io.Reader, bad OnBadRecord) ([]Record, error) {
	var out []Record
	err := scanRecordLines(name, r, bad, func(text []byte) error {
		rec, err := parseRecord(text)
		if err == nil {
			out = append(out, rec)
		}
		return err
	})
	return out, err
}

// scanRecordLines calls parse on every non-blank line of r. A parse error
// stops the scan with "name:line: err", or, when bad.Skip, is passed to
// bad.Skipped and the scan goes on. A file with no good record is an error.
func scanRecordLines(name string, r io.Reader, bad OnBadRecord, parse func(text []byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), maxRecordLine)
	line, good, skipped := 0, 0, 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		if err := parse(text); err != nil {
			err = fmt.Errorf("%s:%d: %w", name, line, err)
			if !bad.Skip {
				return err
			}
			skipped++
			if bad.Skipped != nil {
				bad.Skipped(err)
			}
			continue
		}
		good++
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%s:%d: line longer than %d bytes", name, line+1, maxRecordLine)
		}
		return fmt.Errorf("%s:%d: %w", name, line+1, err)
	}
	if good == 0 {
		if skipped > 0 {
			return fmt.Errorf("%s: no valid records (%d bad lines skipped)", name, skipped)
		}
		return fmt.Errorf("%s: no records", name)
	}
	return nil
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
