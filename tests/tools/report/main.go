// Command report turns the output of the two upstream conformance suites into JUnit and a
// one-screen summary, for `make conformance` (tests/cluster/conformance.sh).
//
//	report junit SUITE < test2json-events > junit.xml
//	    Go test events (`go tool test2json`) as JUnit: one test case per test directly under a
//	    top-level test, with its output (and its subtests') on failure. The network-policy-api
//	    suite is a Go test binary; this is its JUnit report.
//	report summary SUITE JUNIT FOCUS [-because REGEXP=REASON] [SKIPPED-NAME=REASON ...]
//	    Passed, failed and skipped counts of the test cases whose names match the regular
//	    expression FOCUS, each failure by name, and each skip with its reason. A case skipped by the
//	    suite itself keeps the suite's message, unless its name matches the REGEXP of -because
//	    (a Ginkgo --skip reports its specs as skipped without saying why): then it has REASON.
//	    SKIPPED-NAME=REASON names a test the run left out that never reaches the report (a Go
//	    -test.skip): it is listed as skipped with REASON. Exits 1 when a case failed or when no
//	    case matched FOCUS, so that an empty run never passes.
package main

import (
	"bufio"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

type testSuites struct {
	XMLName xml.Name    `xml:"testsuites"`
	Suites  []testSuite `xml:"testsuite"`
}

type testSuite struct {
	Name     string     `xml:"name,attr"`
	Tests    int        `xml:"tests,attr"`
	Failures int        `xml:"failures,attr"`
	Skipped  int        `xml:"skipped,attr"`
	Time     string     `xml:"time,attr"`
	Cases    []testCase `xml:"testcase"`
}

type testCase struct {
	Name      string   `xml:"name,attr"`
	Classname string   `xml:"classname,attr,omitempty"`
	Time      string   `xml:"time,attr"`
	Failure   *message `xml:"failure"`
	Error     *message `xml:"error"`
	Skipped   *message `xml:"skipped"`
}

type message struct {
	Message string `xml:"message,attr,omitempty"`
	Text    string `xml:",chardata"`
}

// event is one line of `go tool test2json`.
type event struct {
	Action  string
	Test    string
	Elapsed float64
	Output  string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) >= 2 && args[0] == "junit" {
		return junit(args[1], os.Stdin, os.Stdout)
	}
	if len(args) >= 4 && args[0] == "summary" {
		failed, err := summary(args[1], args[2], args[3], args[4:], os.Stdout)
		if err != nil {
			return err
		}
		if failed {
			os.Exit(1)
		}
		return nil
	}
	return fmt.Errorf("usage: report junit SUITE < events | report summary SUITE JUNIT FOCUS [-because REGEXP=REASON] [NAME=REASON ...]")
}

func junit(suite string, in io.Reader, out io.Writer) error {
	type state struct {
		output  strings.Builder
		action  string
		elapsed float64
	}
	tests := map[string]*state{}
	var order []string
	scanner := bufio.NewScanner(in)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	line := 0
	for scanner.Scan() {
		line++
		var e event
		if err := json.Unmarshal(scanner.Bytes(), &e); err != nil {
			return fmt.Errorf("line %d of the test events is not test2json output: %v", line, err)
		}
		if e.Test == "" {
			continue
		}
		s, ok := tests[e.Test]
		if !ok {
			s = &state{}
			tests[e.Test] = s
			order = append(order, e.Test)
		}
		switch e.Action {
		case "output":
			s.output.WriteString(e.Output)
		case "pass", "fail", "skip":
			s.action, s.elapsed = e.Action, e.Elapsed
		}
	}
	if err := scanner.Err(); err != nil {
		return fmt.Errorf("reading the test events: %v", err)
	}
	// One case per test directly under a top-level test (a conformance test, whose subtests are its
	// steps on one shared policy), or per top-level test that has none. A case's output holds its
	// subtests' output too.
	hasChildren := map[string]bool{}
	for _, name := range order {
		if i := strings.Index(name, "/"); i > 0 {
			hasChildren[name[:i]] = true
		}
	}
	result := testSuite{Name: suite}
	var total float64
	for _, name := range order {
		depth := strings.Count(name, "/")
		if depth == 0 {
			total += tests[name].elapsed
		}
		if depth > 1 || (depth == 0 && hasChildren[name]) {
			continue
		}
		s := tests[name]
		var output strings.Builder
		for _, other := range order {
			if other == name || strings.HasPrefix(other, name+"/") {
				output.WriteString(tests[other].output.String())
			}
		}
		c := testCase{Name: name, Classname: suite, Time: fmt.Sprintf("%.3f", s.elapsed)}
		switch s.action {
		case "pass":
		case "skip":
			c.Skipped = &message{Message: skipReason(s.output.String())}
			result.Skipped++
		case "fail":
			c.Failure = &message{Text: output.String()}
			result.Failures++
		default: // the binary ended (panic, timeout) before this test did
			c.Error = &message{Message: "the test never finished", Text: output.String()}
			result.Failures++
		}
		result.Cases = append(result.Cases, c)
	}
	result.Tests = len(result.Cases)
	result.Time = fmt.Sprintf("%.3f", total)
	encoded, err := xml.MarshalIndent(testSuites{Suites: []testSuite{result}}, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s%s\n", xml.Header, encoded)
	return err
}

// skipReason is the last line a skipped test logged (its t.Skip message), without the test
// runner's own "=== RUN" and "--- SKIP" lines.
func skipReason(output string) string {
	lines := strings.Split(strings.TrimSpace(output), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		line := strings.TrimSpace(lines[i])
		if line != "" && !strings.HasPrefix(line, "=== ") && !strings.HasPrefix(line, "--- ") {
			return line
		}
	}
	return ""
}

func summary(suite, file, focus string, leftOut []string, out io.Writer) (bool, error) {
	focusRe, err := regexp.Compile(focus)
	if err != nil {
		return false, fmt.Errorf("FOCUS %q: %v", focus, err)
	}
	var becauseRe *regexp.Regexp
	var because string
	if len(leftOut) >= 2 && leftOut[0] == "-because" {
		pattern, reason, ok := strings.Cut(leftOut[1], "=")
		if !ok {
			return false, fmt.Errorf("-because %q needs REGEXP=REASON", leftOut[1])
		}
		if becauseRe, err = regexp.Compile(pattern); err != nil {
			return false, fmt.Errorf("-because %q: %v", pattern, err)
		}
		because, leftOut = reason, leftOut[2:]
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return false, err
	}
	var suites testSuites
	if err := xml.Unmarshal(raw, &suites); err != nil {
		// Ginkgo writes <testsuites>; a bare <testsuite> is JUnit too.
		var one testSuite
		if err2 := xml.Unmarshal(raw, &one); err2 != nil {
			return false, fmt.Errorf("%s is not JUnit XML: %v", file, err)
		}
		suites.Suites = []testSuite{one}
	}
	var passed, failed []string
	skipped := map[string]string{}
	var seconds float64
	for _, s := range suites.Suites {
		for _, c := range s.Cases {
			if !focusRe.MatchString(c.Name) {
				continue
			}
			var t float64
			fmt.Sscanf(c.Time, "%g", &t)
			seconds += t
			switch {
			case c.Failure != nil || c.Error != nil:
				failed = append(failed, c.Name)
			case c.Skipped != nil && becauseRe != nil && becauseRe.MatchString(c.Name):
				skipped[c.Name] = because
			case c.Skipped != nil:
				skipped[c.Name] = "skipped by the suite: " + firstNonEmpty(c.Skipped.Message, strings.TrimSpace(c.Skipped.Text), "no reason given")
			default:
				passed = append(passed, c.Name)
			}
		}
	}
	for _, entry := range leftOut {
		name, reason, ok := strings.Cut(entry, "=")
		if !ok {
			return false, fmt.Errorf("left-out test %q needs NAME=REASON", entry)
		}
		skipped[name] = reason
	}
	fmt.Fprintf(out, "%s: %d passed, %d failed, %d skipped (%s of test time)\n", suite, len(passed), len(failed),
		len(skipped), time.Duration(seconds*float64(time.Second)).Round(time.Second))
	sort.Strings(failed)
	for _, name := range failed {
		fmt.Fprintf(out, "  FAILED   %s\n", name)
	}
	names := make([]string, 0, len(skipped))
	for name := range skipped {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(out, "  skipped  %s\n           (%s)\n", name, skipped[name])
	}
	if len(passed)+len(failed) == 0 {
		fmt.Fprintf(out, "  no test matching %q ran\n", focus)
		return true, nil
	}
	return len(failed) > 0, nil
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
