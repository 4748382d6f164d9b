package tasks

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/perkgo/perk/perk"
)

// StudentQueries lists the student-records question classes (the
// Drops-in-the-Ocean benchmark's): recall (an attribute of one student by
// id), relation (a yes/no comparison of two students), aggregate (the
// highest, lowest or average grade of all students), and mixed (a class
// drawn at random per record).
var StudentQueries = []string{"recall", "relation", "aggregate", "mixed"}

// studentYears are the years a student can be in.
var studentYears = []string{"Freshman", "Sophomore", "Junior", "Senior"}

// studentSchools maps each school to its majors (no commas, so a record
// reads back unambiguously).
var studentSchools = []struct {
	name   string
	majors []string
}{
	{"School of Engineering", []string{"Civil Engineering", "Mechanical Engineering", "Electrical & Electronics Engineering",
		"Biomedical Engineering", "Chemical Engineering", "Environmental Engineering"}},
	{"School of Arts and Humanities", []string{"History", "Philosophy", "Comparative Literature", "Music",
		"Drama & Theatre Arts", "Classics & Ancient Languages", "Art History"}},
	{"School of Natural Sciences", []string{"Physics", "Chemistry", "Biology", "Geology", "Astronomy", "Mathematics"}},
	{"School of Computer and Data Sciences", []string{"Computer Science", "Data Science", "Cybersecurity", "Information Systems"}},
	{"School of Social Sciences", []string{"Economics", "Psychology", "Sociology", "Political Science", "Anthropology"}},
	{"School of Business", []string{"Accounting", "Finance", "Marketing", "Management"}},
}

// Name parts, with the occasional title and suffix.
var (
	firstNames = []string{"Alice", "Andrew", "Angela", "Arthur", "Beatrice", "Benjamin", "Caroline", "Charles",
		"Clara", "Daphne", "David", "Edith", "Edward", "Eleanor", "Felix", "Fiona", "George", "Grace", "Harold",
		"Helen", "Henry", "Irene", "Isaac", "Jasmine", "Joseph", "Karen", "Kevin", "Laura", "Leonard", "Lucy",
		"Marcus", "Margaret", "Martin", "Nadia", "Nathan", "Olivia", "Oscar", "Patricia", "Peter", "Quentin",
		"Rachel", "Robert", "Rosa", "Samuel", "Sophie", "Thomas", "Theresa", "Victor", "Vivian", "Walter",
		"Wendy", "Xavier", "Yvonne", "Zachary"}
	lastNames = []string{"Abbott", "Barker", "Bennett", "Carlson", "Chambers", "Dalton", "Donovan", "Ellison",
		"Fairbanks", "Fletcher", "Garrison", "Gibson", "Hammond", "Harper", "Ingram", "Jennings", "Keller",
		"Lambert", "Lawson", "Maddox", "Mercer", "Norwood", "Oakley", "Osborne", "Palmer", "Prescott", "Quinlan",
		"Ramsey", "Rowland", "Sawyer", "Shepherd", "Sinclair", "Thornton", "Underwood", "Vaughn", "Wallace",
		"Whitaker", "Winslow", "Yates", "Zimmerman"}
	nameTitles   = []string{"Mr.", "Mrs.", "Ms.", "Dr."}
	nameSuffixes = []string{"Jr.", "PhD", "MD", "DDS"}
)

// Student is one row of a student-records database.
type Student struct {
	// ID is the student id, seven digits in generated databases.
	ID string
	// Name, Year, School and Major are the student's attributes.
	Name, Year, School, Major string
	// Grade is the grade, 0 to 100 in generated databases.
	Grade string
}

// Text is the record as one context document, in the reference
// implementation's format:
//
//	Student <3109998>, Name: Alice Barker, Year: Sophomore, School: School of Engineering, Major: Civil Engineering, Grade: 72
func (s Student) Text() string {
	return fmt.Sprintf("Student <%s>, Name: %s, Year: %s, School: %s, Major: %s, Grade: %s",
		s.ID, s.Name, s.Year, s.School, s.Major, s.Grade)
}

// StudentsOptions configures a student-records generator.
type StudentsOptions struct {
	Options
	// Query is one of StudentQueries ("" means mixed).
	Query string
}

// Students generates Drops-in-the-Ocean-style student-records records: a
// fresh database per record, one student per context segment, as many
// students as fit Options.Tokens, with distinct ids. Questions:
//
//	recall     "What is the name of the student with ID 3109998?" (also major, grade, year, school)
//	relation   "Does student 3109998 have a higher grade than student 1002030?" → Yes/No
//	           (also same major, same school, same year; about half of the same-X questions are Yes)
//	aggregate  "What is the highest grade among all students?" (also lowest; the average grade of
//	           all students to one decimal, e.g. "49.3")
//
// The support is the records the answer rests on (recall one, relation
// two, highest/lowest every record with that grade; none for the
// average), which Options.Depths places together; the other records are
// in random order.
type Students struct {
	b     *base
	query string
	unit  int
}

// NewStudents validates o and returns a generator.
func NewStudents(o StudentsOptions) (*Students, error) {
	q := o.Query
	if q == "" {
		q = "mixed"
	}
	if !slices.Contains(StudentQueries, q) {
		return nil, fmt.Errorf("unknown student-records query %q (want one of %s)", o.Query, strings.Join(StudentQueries, ", "))
	}
	c := o.Counter
	if c == nil {
		c = ApproxCounter{}
	}
	unit := longestStudentCost(c)
	minRecords := 2
	if q == "recall" {
		minRecords = 1
	}
	b, err := newBase(o.Options, fmt.Sprintf("%d student records a %s question needs", minRecords, q), unit, minRecords*unit, false)
	if err != nil {
		return nil, err
	}
	return &Students{b: b, query: q, unit: unit}, nil
}

// longestStudentCost is the largest count of any record the generator
// can write (every name part, school and major tried at its longest
// combination with the others).
func longestStudentCost(c Counter) int {
	longest := func(xs []string) string {
		best := ""
		for _, x := range xs {
			if len(x) > len(best) {
				best = x
			}
		}
		return best
	}
	name := longest(nameTitles) + " " + longest(firstNames) + " " + longest(lastNames) + " " + longest(nameSuffixes)
	best := 0
	for _, sch := range studentSchools {
		for _, m := range sch.majors {
			for _, y := range studentYears {
				s := Student{ID: "9999999", Name: name, Year: y, School: sch.name, Major: m, Grade: "100"}
				best = max(best, c.Count(s.Text()))
			}
		}
	}
	return best
}

// Item returns record i, "students-{query}-{i}", with its metadata
// (Item; an average-grade question has no support, so its records are in
// random order and have no depth).
func (g *Students) Item(i int) (Item, error) {
	rng := g.b.rng(i)
	id := fmt.Sprintf("students-%s-%d", g.query, i)
	c, budget := g.b.o.Counter, g.b.o.Tokens
	var db []Student
	var texts []string
	var costs []int
	seen := map[string]bool{}
	total := 0
	for {
		s := drawStudent(rng, seen)
		t := s.Text()
		k := c.Count(t)
		if k > g.b.o.SegmentTokens {
			return Item{}, fmt.Errorf("record %s: student record %q has %d tokens, more than the segment limit of %d", id, t, k, g.b.o.SegmentTokens)
		}
		if total+k > budget {
			break
		}
		seen[s.ID] = true
		db, texts, costs = append(db, s), append(texts, t), append(costs, k)
		total += k
	}
	query := g.query
	if query == "mixed" {
		query = StudentQueries[rng.IntN(3)]
	}
	if len(db) < 2 && query != "recall" {
		return Item{}, fmt.Errorf("record %s: only %d student record fits the %d-token context; a %s question needs two", id, len(db), budget, query)
	}
	if len(db) == 0 {
		return Item{}, fmt.Errorf("record %s: no student record fits the %d-token context", id, budget)
	}
	question, answer, support := studentQuestion(rng, db, query)
	depth := g.b.depth(i)
	order := arrange(rng, costs, support, depth)
	ctx := make([]string, len(order))
	for k, j := range order {
		ctx[k] = texts[j]
	}
	isSup := make([]bool, len(db))
	for _, j := range support {
		isSup[j] = true
	}
	var sup []string
	for _, j := range order {
		if isSup[j] {
			sup = append(sup, texts[j])
		}
	}
	r := perk.Record{ID: id, Context: ctx, Question: question, Answer: answer, Support: sup}
	return Item{Record: r, Meta: recordMeta(total, depth, support)}, r.Validate()
}

// arrange orders n documents with the given costs: the support documents
// together at depth (when depth ≥ 0 and there is a support), the others in
// random order around them; with no depth, every document in random order.
func arrange(rng *rand.Rand, costs []int, support []int, depth float64) []int {
	if !atDepth(depth, support) {
		return rng.Perm(len(costs))
	}
	isSup := make([]bool, len(costs))
	for _, j := range support {
		isSup[j] = true
	}
	var others []int
	for _, j := range rng.Perm(len(costs)) {
		if !isSup[j] {
			others = append(others, j)
		}
	}
	oc := make([]int, len(others))
	for k, j := range others {
		oc[k] = costs[j]
	}
	at := depthSlot(oc, depth)
	out := slices.Clone(others[:at])
	out = append(out, support...)
	return append(out, others[at:]...)
}

// drawStudent draws a student whose id is not in seen.
func drawStudent(rng *rand.Rand, seen map[string]bool) Student {
	var id string
	for id == "" || seen[id] {
		id = strconv.Itoa(1000000 + rng.IntN(9000000))
	}
	name := firstNames[rng.IntN(len(firstNames))] + " " + lastNames[rng.IntN(len(lastNames))]
	if rng.IntN(8) == 0 {
		name = nameTitles[rng.IntN(len(nameTitles))] + " " + name
	}
	if rng.IntN(8) == 0 {
		name += " " + nameSuffixes[rng.IntN(len(nameSuffixes))]
	}
	sch := studentSchools[rng.IntN(len(studentSchools))]
	return Student{ID: id, Name: name, Year: studentYears[rng.IntN(len(studentYears))], School: sch.name,
		Major: sch.majors[rng.IntN(len(sch.majors))], Grade: strconv.Itoa(rng.IntN(101))}
}

// studentQuestion asks a question of one class about db; support indexes
// db.
func studentQuestion(rng *rand.Rand, db []Student, query string) (question, answer string, support []int) {
	switch query {
	case "recall":
		k := rng.IntN(len(db))
		s := db[k]
		switch rng.IntN(5) {
		case 0:
			return "What is the name of the student with ID " + s.ID + "?", s.Name, []int{k}
		case 1:
			return "What major is the student with ID " + s.ID + " studying?", s.Major, []int{k}
		case 2:
			return "What is the grade of the student with ID " + s.ID + "?", s.Grade, []int{k}
		case 3:
			return "Which year is the student with ID " + s.ID + " in?", s.Year, []int{k}
		default:
			return "Which school is the student with ID " + s.ID + " enrolled in?", s.School, []int{k}
		}
	case "relation":
		k := rng.IntN(len(db))
		kind := rng.IntN(4)
		attr := func(s Student) string {
			switch kind {
			case 1:
				return s.Major
			case 2:
				return s.School
			default:
				return s.Year
			}
		}
		var same, other []int
		for j := range db {
			if j == k {
				continue
			}
			if kind != 0 && attr(db[j]) == attr(db[k]) {
				same = append(same, j)
			} else {
				other = append(other, j)
			}
		}
		var j int
		if kind != 0 && len(same) > 0 && (len(other) == 0 || rng.IntN(2) == 0) {
			j = same[rng.IntN(len(same))]
		} else {
			j = other[rng.IntN(len(other))]
		}
		a, b := db[k], db[j]
		yes := func(v bool) string {
			if v {
				return "Yes"
			}
			return "No"
		}
		switch kind {
		case 0:
			ga, _ := strconv.Atoi(a.Grade)
			gb, _ := strconv.Atoi(b.Grade)
			return "Does student " + a.ID + " have a higher grade than student " + b.ID + "?", yes(ga > gb), []int{k, j}
		case 1:
			return "Does student " + a.ID + " study the same major as student " + b.ID + "?", yes(a.Major == b.Major), []int{k, j}
		case 2:
			return "Are student " + a.ID + " and student " + b.ID + " enrolled in the same school?", yes(a.School == b.School), []int{k, j}
		default:
			return "Are student " + a.ID + " and student " + b.ID + " in the same year?", yes(a.Year == b.Year), []int{k, j}
		}
	default: // aggregate
		grades := make([]int, len(db))
		sum := 0
		for j, s := range db {
			grades[j], _ = strconv.Atoi(s.Grade)
			sum += grades[j]
		}
		with := func(g int) []int {
			var out []int
			for j, x := range grades {
				if x == g {
					out = append(out, j)
				}
			}
			return out
		}
		switch rng.IntN(3) {
		case 0:
			m := slices.Max(grades)
			return "What is the highest grade among all students?", strconv.Itoa(m), with(m)
		case 1:
			m := slices.Min(grades)
			return "What is the lowest grade among all students?", strconv.Itoa(m), with(m)
		default:
			return "What is the average grade of all students?", formatAverage(sum, len(db)), nil
		}
	}
}

// formatAverage writes sum/n to one decimal place, the form of the
// average-grade answers ("49.3").
func formatAverage(sum, n int) string {
	return strconv.FormatFloat(float64(sum)/float64(n), 'f', 1, 64)
}
