package tasks

// An independent checker: it reads the facts back out of a record's
// context text with regular expressions and re-derives the answer and the
// support from them alone, using only the per-agent event order. It shares
// no code with the generators beyond SplitSentences.

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/perkgo/perk/perk"
)

var (
	reMove = regexp.MustCompile(`^(\w+) Event (\d+): (\w+) (?:went to|journeyed to|travelled to|moved to|went back to) the (\w+)\.$`)
	reTake = regexp.MustCompile(`^(\w+) Event (\d+): (\w+) (?:picked up|got|grabbed|took) the (\w+) there\.$`)
	reDrop = regexp.MustCompile(`^(\w+) Event (\d+): (\w+) (?:dropped|discarded|put down|left) the (\w+)(?: there)?\.$`)
	reGive = regexp.MustCompile(`^(\w+) Event (\d+): (\w+) (?:gave|handed|passed) the (\w+) to (\w+)\.$`)
	reRel  = regexp.MustCompile(`^The (\w+) is (north|south|east|west) of the (\w+)\.$`)
	reAny  = regexp.MustCompile(`Event \d+:|special magic|^Student <`)

	reNeedle = regexp.MustCompile(`^One of the special magic numbers for ([a-z]+-[a-z]+) is: (\d{7})\.$`)
	reStud   = regexp.MustCompile(`^Student <(\d+)>, Name: ([^,]+), Year: (\w+), School: ([^,]+), Major: ([^,]+), Grade: (\d+)$`)
)

// pfact is a fact parsed back from context text.
type pfact struct {
	text, kind, agent string
	n                 int
	obj, loc, to      string
	a, dir, b         string // qa4 relations
}

// sentences returns every sentence of a context.
func sentences(ctx []string) []string {
	var out []string
	for _, seg := range ctx {
		out = append(out, SplitSentences(seg)...)
	}
	return out
}

// parseFacts reads the bAbI facts of a context and checks that each
// agent's event numbers are exactly 0..k-1.
func parseFacts(ctx []string) ([]pfact, error) {
	var out []pfact
	for _, s := range sentences(ctx) {
		var f pfact
		var m []string
		if !strings.Contains(s, " Event ") && !strings.Contains(s, " of the ") {
			if strings.Contains(s, "special magic") || strings.HasPrefix(s, "Student <") {
				return nil, fmt.Errorf("unexpected fact-like sentence %q", s)
			}
			continue // prose: a cheap test before the regular expressions
		}
		switch {
		case reMove.MatchString(s):
			m = reMove.FindStringSubmatch(s)
			f = pfact{kind: "move", loc: m[4]}
		case reTake.MatchString(s):
			m = reTake.FindStringSubmatch(s)
			f = pfact{kind: "take", obj: m[4]}
		case reDrop.MatchString(s):
			m = reDrop.FindStringSubmatch(s)
			f = pfact{kind: "drop", obj: m[4]}
		case reGive.MatchString(s):
			m = reGive.FindStringSubmatch(s)
			f = pfact{kind: "give", obj: m[4], to: m[5]}
		case reRel.MatchString(s):
			m = reRel.FindStringSubmatch(s)
			out = append(out, pfact{text: s, kind: "rel", a: m[1], dir: m[2], b: m[3]})
			continue
		default:
			if reAny.MatchString(s) {
				return nil, fmt.Errorf("unparsed fact-like sentence %q", s)
			}
			continue
		}
		if m[1] != m[3] {
			return nil, fmt.Errorf("fact %q names two agents", s)
		}
		f.text, f.agent = s, m[1]
		f.n, _ = strconv.Atoi(m[2])
		out = append(out, f)
	}
	seen := map[string][]int{}
	for _, f := range out {
		if f.kind != "rel" {
			seen[f.agent] = append(seen[f.agent], f.n)
		}
	}
	for a, ns := range seen {
		slices.Sort(ns)
		for i, n := range ns {
			if n != i {
				return nil, fmt.Errorf("agent %s has event numbers %v, want 0..%d", a, ns, len(ns)-1)
			}
		}
	}
	return out, nil
}

// byAgent returns an agent's facts in event order.
func byAgent(facts []pfact, a string) []pfact {
	var out []pfact
	for _, f := range facts {
		if f.kind != "rel" && f.agent == a {
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].n < out[j].n })
	return out
}

// lastMoveBefore is agent a's last move with event number below n.
func lastMoveBefore(facts []pfact, a string, n int) (pfact, bool) {
	var best pfact
	ok := false
	for _, f := range byAgent(facts, a) {
		if f.kind == "move" && f.n < n {
			best, ok = f, true
		}
	}
	return best, ok
}

func texts(fs ...pfact) []string {
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].n < fs[j].n })
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.text
	}
	return out
}

var (
	qWhereIs     = regexp.MustCompile(`^Where is (\w+)\?$`)
	qWhereObj    = regexp.MustCompile(`^Where is the (\w+)\?$`)
	qBefore      = regexp.MustCompile(`^Where was the (\w+) before the (\w+)\?$`)
	qRelOf       = regexp.MustCompile(`^What is (north|south|east|west) of the (\w+)\?$`)
	qRelIs       = regexp.MustCompile(`^What is the (\w+) (north|south|east|west) of\?$`)
	qWhatGive    = regexp.MustCompile(`^What did (\w+) give to (\w+)\?$`)
	qWhoDidGive  = regexp.MustCompile(`^Who did (\w+) give the (\w+) to\?$`)
	qWhoGave     = regexp.MustCompile(`^Who gave the (\w+) to (\w+)\?$`)
	qWhoReceived = regexp.MustCompile(`^Who received the (\w+)\?$`)
	qWhatRecv    = regexp.MustCompile(`^What did (\w+) receive\?$`)
)

var opposite = map[string]string{"north": "south", "south": "north", "east": "west", "west": "east"}

// solveBabi re-derives a BabiLong record's answer and support.
func solveBabi(r perk.Record) (string, []string, error) {
	facts, err := parseFacts(r.Context)
	if err != nil {
		return "", nil, err
	}
	q := r.Question
	objFacts := func(o string) (take, drop pfact, nt, nd int, agents map[string]bool) {
		agents = map[string]bool{}
		for _, f := range facts {
			if f.obj == o && f.kind == "take" {
				take, nt = f, nt+1
				agents[f.agent] = true
			}
			if f.obj == o && f.kind == "drop" {
				drop, nd = f, nd+1
				agents[f.agent] = true
			}
		}
		return
	}
	switch {
	case qWhereIs.MatchString(q):
		a := qWhereIs.FindStringSubmatch(q)[1]
		m, ok := lastMoveBefore(facts, a, 1<<30)
		if !ok {
			return "", nil, fmt.Errorf("%s never moved", a)
		}
		return m.loc, texts(m), nil
	case qWhereObj.MatchString(q):
		o := qWhereObj.FindStringSubmatch(q)[1]
		take, drop, nt, nd, agents := objFacts(o)
		if nt != 1 || nd > 1 || len(agents) != 1 {
			return "", nil, fmt.Errorf("the %s is taken %d and dropped %d times by %d agents", o, nt, nd, len(agents))
		}
		if nd == 1 {
			m, ok := lastMoveBefore(facts, drop.agent, drop.n)
			if !ok || drop.n < take.n {
				return "", nil, fmt.Errorf("inconsistent story for the %s", o)
			}
			return m.loc, texts(m, drop), nil
		}
		m, _ := lastMoveBefore(facts, take.agent, 1<<30)
		return m.loc, texts(take, m), nil
	case qBefore.MatchString(q):
		sm := qBefore.FindStringSubmatch(q)
		o, l := sm[1], sm[2]
		take, drop, nt, nd, agents := objFacts(o)
		if nt != 1 || nd > 1 || len(agents) != 1 {
			return "", nil, fmt.Errorf("the %s is taken %d and dropped %d times by %d agents", o, nt, nd, len(agents))
		}
		end := 1 << 30
		if nd == 1 {
			end = drop.n
		}
		m0, ok := lastMoveBefore(facts, take.agent, take.n)
		if !ok {
			return "", nil, fmt.Errorf("%s took the %s before moving", take.agent, o)
		}
		hist := []pfact{m0}
		for _, f := range byAgent(facts, take.agent) {
			if f.kind == "move" && f.n > take.n && f.n < end {
				hist = append(hist, f)
			}
		}
		found := -1
		for i := 1; i < len(hist); i++ {
			if hist[i].loc == l {
				if found >= 0 {
					return "", nil, fmt.Errorf("the %s was in the %s twice", o, l)
				}
				found = i
			}
		}
		if found < 0 || hist[0].loc == l {
			return "", nil, fmt.Errorf("the %s never arrived in the %s after being taken (or started there)", o, l)
		}
		return hist[found-1].loc, texts(take, hist[found-1], hist[found]), nil
	case qRelOf.MatchString(q), qRelIs.MatchString(q):
		// Collect every relation both ways, then look the question up.
		type rel struct{ a, dir, b, text string }
		var rels []rel
		for _, f := range facts {
			if f.kind == "rel" {
				rels = append(rels, rel{f.a, f.dir, f.b, f.text}, rel{f.b, opposite[f.dir], f.a, f.text})
			}
		}
		var hits []rel
		var ans func(rel) string
		if sm := qRelOf.FindStringSubmatch(q); sm != nil {
			for _, x := range rels {
				if x.dir == sm[1] && x.b == sm[2] {
					hits = append(hits, x)
				}
			}
			ans = func(x rel) string { return x.a }
		} else {
			sm := qRelIs.FindStringSubmatch(q)
			for _, x := range rels {
				if x.a == sm[1] && x.dir == sm[2] {
					hits = append(hits, x)
				}
			}
			ans = func(x rel) string { return x.b }
		}
		if len(hits) != 1 {
			return "", nil, fmt.Errorf("%d relations answer %q", len(hits), q)
		}
		return ans(hits[0]), []string{hits[0].text}, nil
	}
	// qa5: gives.
	var gives []pfact
	for _, f := range facts {
		if f.kind == "give" {
			gives = append(gives, f)
		}
	}
	filter := func(keep func(pfact) bool) []pfact {
		var out []pfact
		for _, g := range gives {
			if keep(g) {
				out = append(out, g)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].n < out[j].n })
		return out
	}
	oneGiver := func(gs []pfact) error {
		for _, g := range gs {
			if g.agent != gs[0].agent {
				return fmt.Errorf("two givers for %q", q)
			}
		}
		if len(gs) == 0 {
			return fmt.Errorf("no give answers %q", q)
		}
		return nil
	}
	switch {
	case qWhatGive.MatchString(q):
		sm := qWhatGive.FindStringSubmatch(q)
		gs := filter(func(g pfact) bool { return g.agent == sm[1] && g.to == sm[2] })
		if err := oneGiver(gs); err != nil {
			return "", nil, err
		}
		last := gs[len(gs)-1]
		return last.obj, texts(last), nil
	case qWhoDidGive.MatchString(q):
		sm := qWhoDidGive.FindStringSubmatch(q)
		gs := filter(func(g pfact) bool { return g.agent == sm[1] && g.obj == sm[2] })
		if err := oneGiver(gs); err != nil {
			return "", nil, err
		}
		last := gs[len(gs)-1]
		return last.to, texts(last), nil
	case qWhoGave.MatchString(q):
		sm := qWhoGave.FindStringSubmatch(q)
		gs := filter(func(g pfact) bool { return g.obj == sm[1] && g.to == sm[2] })
		if err := oneGiver(gs); err != nil {
			return "", nil, err
		}
		last := gs[len(gs)-1]
		return last.agent, texts(last), nil
	case qWhoReceived.MatchString(q):
		sm := qWhoReceived.FindStringSubmatch(q)
		gs := filter(func(g pfact) bool { return g.obj == sm[1] })
		if len(gs) != 1 {
			return "", nil, fmt.Errorf("the %s was given %d times", sm[1], len(gs))
		}
		return gs[0].to, texts(gs[0]), nil
	case qWhatRecv.MatchString(q):
		sm := qWhatRecv.FindStringSubmatch(q)
		gs := filter(func(g pfact) bool { return g.to == sm[1] })
		if len(gs) != 1 {
			return "", nil, fmt.Errorf("%s received %d times", sm[1], len(gs))
		}
		return gs[0].obj, texts(gs[0]), nil
	}
	return "", nil, fmt.Errorf("unknown question %q", q)
}

var (
	qNeedle  = regexp.MustCompile(`^What is the special magic number for (\S+) mentioned in the provided text\?$`)
	qNeedles = regexp.MustCompile(`^What are all the special magic numbers for (.+) mentioned in the provided text\?$`)
)

// solveNeedle re-derives a needle record's answer and support.
func solveNeedle(r perk.Record) (string, []string, error) {
	values := map[string][]string{}
	texts := map[string][]string{}
	for _, s := range sentences(r.Context) {
		if m := reNeedle.FindStringSubmatch(s); m != nil {
			values[m[1]] = append(values[m[1]], m[2])
			texts[m[1]] = append(texts[m[1]], s)
		} else if strings.Contains(s, "magic") {
			return "", nil, fmt.Errorf("unparsed needle-like sentence %q", s)
		}
	}
	if m := qNeedle.FindStringSubmatch(r.Question); m != nil {
		if len(values[m[1]]) != 1 {
			return "", nil, fmt.Errorf("key %s has %d values", m[1], len(values[m[1]]))
		}
		return values[m[1]][0], texts[m[1]], nil
	}
	m := qNeedles.FindStringSubmatch(r.Question)
	if m == nil {
		return "", nil, fmt.Errorf("unknown question %q", r.Question)
	}
	keys := strings.Split(strings.Replace(m[1], " and ", ", ", 1), ", ")
	if len(keys) == 1 {
		vs := slices.Clone(values[keys[0]])
		slices.Sort(vs) // 7-digit numbers sort as strings
		if len(vs) < 2 {
			return "", nil, fmt.Errorf("key %s has %d values", keys[0], len(vs))
		}
		return strings.Join(vs, ", "), texts[keys[0]], nil
	}
	var vs, sup []string
	for _, k := range keys {
		if len(values[k]) != 1 {
			return "", nil, fmt.Errorf("key %s has %d values", k, len(values[k]))
		}
		vs = append(vs, values[k][0])
		sup = append(sup, texts[k][0])
	}
	return strings.Join(vs, ", "), sup, nil
}

// stud is a student record parsed back from a segment.
type stud struct {
	text, id, name, year, school, major string
	grade                               int
}

var (
	qName    = regexp.MustCompile(`^What is the name of the student with ID (\d+)\?$`)
	qMajor   = regexp.MustCompile(`^What major is (?:the )?student with ID (\d+) studying\?$`)
	qGrade   = regexp.MustCompile(`^What is the grade of the student with ID (\d+)\?$`)
	qYear    = regexp.MustCompile(`^Which year is (?:the )?student with ID (\d+) in\?$`)
	qSchool  = regexp.MustCompile(`^Which school is the student with ID (\d+) enrolled in\?$`)
	qHigher  = regexp.MustCompile(`^Does student (\d+) (?:have|has) a higher grade than student (\d+)\?$`)
	qSameMaj = regexp.MustCompile(`^Does student (\d+) study the same major as student (\d+)\?$`)
	qSameSch = regexp.MustCompile(`^Are student (\d+) and student (\d+) enrolled in the same school\?$`)
	qSameYr  = regexp.MustCompile(`^Are student (\d+) and student (\d+) in the same year\?$`)
)

// solveStudents re-derives a student-records record's answer and support
// (support in context order).
func solveStudents(r perk.Record) (string, []string, error) {
	byID := map[string]stud{}
	var all []stud
	for _, seg := range r.Context {
		m := reStud.FindStringSubmatch(seg)
		if m == nil {
			return "", nil, fmt.Errorf("segment %q is not one student record", seg)
		}
		g, _ := strconv.Atoi(m[6])
		s := stud{seg, m[1], m[2], m[3], m[4], m[5], g}
		byID[s.id] = s // a repeated id keeps the last row; rows must agree
		all = append(all, s)
	}
	get := func(id string) (stud, error) {
		s, ok := byID[id]
		if !ok {
			return stud{}, fmt.Errorf("no student %s", id)
		}
		return s, nil
	}
	inOrder := func(ids ...string) []string {
		var out []string
		for _, s := range all {
			if slices.Contains(ids, s.id) && !slices.Contains(out, s.text) {
				out = append(out, s.text)
			}
		}
		return out
	}
	yes := map[bool]string{true: "Yes", false: "No"}
	q := r.Question
	for _, c := range []struct {
		re *regexp.Regexp
		f  func(s stud) string
	}{
		{qName, func(s stud) string { return s.name }},
		{qMajor, func(s stud) string { return s.major }},
		{qGrade, func(s stud) string { return strconv.Itoa(s.grade) }},
		{qYear, func(s stud) string { return s.year }},
		{qSchool, func(s stud) string { return s.school }},
	} {
		if m := c.re.FindStringSubmatch(q); m != nil {
			s, err := get(m[1])
			if err != nil {
				return "", nil, err
			}
			return c.f(s), inOrder(s.id), nil
		}
	}
	for _, c := range []struct {
		re *regexp.Regexp
		f  func(a, b stud) bool
	}{
		{qHigher, func(a, b stud) bool { return a.grade > b.grade }},
		{qSameMaj, func(a, b stud) bool { return a.major == b.major }},
		{qSameSch, func(a, b stud) bool { return a.school == b.school }},
		{qSameYr, func(a, b stud) bool { return a.year == b.year }},
	} {
		if m := c.re.FindStringSubmatch(q); m != nil {
			a, err := get(m[1])
			if err != nil {
				return "", nil, err
			}
			b, err := get(m[2])
			if err != nil {
				return "", nil, err
			}
			return yes[c.f(a, b)], inOrder(a.id, b.id), nil
		}
	}
	grades := make([]int, len(all))
	sum := 0
	for i, s := range all {
		grades[i] = s.grade
		sum += s.grade
	}
	with := func(g int) []string {
		var out []string
		for _, s := range all {
			if s.grade == g {
				out = append(out, s.text)
			}
		}
		return out
	}
	switch q {
	case "What is the highest grade among all students?":
		m := slices.Max(grades)
		return strconv.Itoa(m), with(m), nil
	case "What is the lowest grade among all students?":
		m := slices.Min(grades)
		return strconv.Itoa(m), with(m), nil
	case "What is the average grade of all students?":
		return fmt.Sprintf("%.1f", float64(sum)/float64(len(all))), nil, nil
	}
	return "", nil, fmt.Errorf("unknown question %q", q)
}
