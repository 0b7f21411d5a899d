//! Requests the model answers for self-distillation (`graft --mtp
//! --self-distill N`): the text a draft head meets most is the model
//! answering a user, so the head trains on the model's own answers. Built-in
//! requests cover code in several languages, explanations and (every third)
//! creative prose: stories, letters, descriptions; after them come requests
//! composed from lists of tasks, languages, concepts and subjects; half the
//! samples instead ask about calibration passages. `--distill-prompts FILE`
//! replaces the built-in list (one request per line).

/// General requests (none is a benchmark's prompt).
pub const BUILTIN: [&str; 120] = [
    "Write a Python function that checks whether a string is a palindrome, ignoring case and punctuation.",
    "Write a short story about a young baker who enters a village competition.",
    "Write a Rust function that parses a comma-separated line of integers into a Vec<i64>, returning an error for bad input.",
    "Implement binary search in C and explain its loop invariant.",
    "Write a letter from a grandmother to her grandson who has just left home for university.",
    "Write a JavaScript function that debounces another function.",
    "Write a SQL query that lists the ten customers with the highest total order value, with their totals.",
    "Describe a busy train station at dawn, as a novelist would.",
    "Write a Bash script that renames every .jpeg file in a directory to .jpg.",
    "Write a Go program that counts word frequencies in a text file and prints the top 20.",
    "Write a fable about a fox and a crow, with a moral at the end.",
    "Write a Java class for a bank account with deposit, withdraw and balance methods, with input checks.",
    "Explain the difference between a process and a thread.",
    "Write a short story about two strangers who share an umbrella during a storm.",
    "Explain what a hash table is and how collisions are handled.",
    "Write a Python class implementing a stack with push, pop and peek, and show how to use it.",
    "Write an essay on why people enjoy travelling to places they have never seen.",
    "Write a C++ function that reverses a singly linked list in place.",
    "Explain Big-O notation with examples of O(1), O(log n), O(n) and O(n^2) algorithms.",
    "Write a diary entry of a sailor on the first day of a long voyage.",
    "Write a Python script that reads a CSV file and prints the average of each numeric column.",
    "Write a Rust program that spawns four threads which each sum part of a vector, then combines the results.",
    "Describe the changing of the seasons in a small mountain village.",
    "Explain how garbage collection differs from reference counting.",
    "Write a TypeScript interface for a user profile and a function that validates one.",
    "Write a short story about a robot that learns to paint.",
    "Write unit tests in Python (pytest) for a function that adds two numbers.",
    "Explain what recursion is and write a recursive function that computes a factorial.",
    "Write a persuasive speech encouraging students to read more books.",
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Explain the HTTP request and response cycle for loading a web page.",
    "Write a bedtime story about a little owl who is afraid of the dark.",
    "Write a regular expression that matches email addresses and explain each part.",
    "Write a function in C that counts the set bits of an unsigned integer.",
    "Write a polite email asking a neighbour to keep their dog quiet at night.",
    "Explain what Git branches are and how merging differs from rebasing.",
    "Write a Python generator that yields prime numbers.",
    "Write a short story set in a city where it never stops raining.",
    "Implement quicksort in Rust and explain how the pivot is chosen.",
    "Write a shell command pipeline that finds the five largest files under a directory.",
    "Describe a walk through a forest after a snowfall.",
    "Explain the difference between TCP and UDP, with an example use of each.",
    "Write a Python decorator that measures how long a function takes.",
    "Write a short mystery story about a missing painting in a museum.",
    "Explain how a compiler differs from an interpreter.",
    "Write a JavaScript function that deep-clones a plain object.",
    "Write a review of an imaginary restaurant that serves only soup.",
    "Explain what a race condition is and how a mutex prevents it.",
    "Write a Python function that returns the n most common words in a text.",
    "Write a short story about a girl who finds a door in the back of her wardrobe.",
    "Write a Rust enum for shapes (circle, rectangle, triangle) with a method computing the area.",
    "Explain the purpose of an index in a relational database, and when it slows things down.",
    "Write a letter of thanks to a teacher who changed your life.",
    "Describe how you would design a URL shortener service.",
    "Write a Kotlin data class for a book and a function that sorts a list of books by year.",
    "Tell the story of a king who wanted to count every star in the sky.",
    "Explain what a closure is, with an example in JavaScript.",
    "Write a Python function that flattens an arbitrarily nested list.",
    "Write a short story about an old clockmaker and his last apprentice.",
    "Explain the main ideas of object-oriented programming: encapsulation, inheritance, polymorphism.",
    "Write a Python function that validates a Sudoku board given as a list of lists.",
    "Describe a market in a coastal town on a summer morning.",
    "Write a Rust struct for a 2D vector with add, subtract, dot product and length methods.",
    "Implement a least-recently-used cache in Python with get and put in O(1).",
    "Write an essay about the value of friendship.",
    "Write a C program that reads lines from standard input and prints them in reverse order.",
    "Write a JavaScript function that fetches JSON from a URL with async/await and handles errors.",
    "Write a short adventure story about children who build a raft.",
    "Write a SQL schema for a blog with users, posts and comments, with foreign keys.",
    "Write a Bash script that backs up a directory into a dated tar.gz archive.",
    "Write a dialogue between a cat and a dog arguing about who is the better pet.",
    "Write a Go HTTP server with one endpoint that returns the current time as JSON.",
    "Write a Java method that checks whether two strings are anagrams.",
    "Write a short story about a musician who loses her hearing.",
    "Explain how public-key cryptography works, using an everyday analogy.",
    "Explain what a deadlock is and the four conditions needed for one.",
    "Write a travel guide entry for an imaginary island with pink beaches.",
    "Write a Python function that computes the Levenshtein distance between two strings.",
    "Write a C++ class template for a fixed-size ring buffer.",
    "Write a short story about a farmer who grows a giant pumpkin.",
    "Explain the difference between stack and heap memory.",
    "Write a Python script that downloads a web page and counts the links on it.",
    "Write a motivational message for someone starting a new job.",
    "Write a Rust function that reads a file and returns the number of lines, words and bytes.",
    "Explain how DNS resolves a domain name to an IP address.",
    "Write a short science-fiction story about the first family to live on Mars.",
    "Write a Python dataclass for an inventory item and a function that totals the value of a list of them.",
    "Implement breadth-first search on a graph stored as an adjacency list in Python.",
    "Describe an old library at night, when everyone has gone home.",
    "Write a JavaScript class for a simple event emitter with on, off and emit.",
    "Explain what a virtual machine is and how a container differs from one.",
    "Write a short story about a boy who can talk to birds.",
    "Write a Python function that converts a Roman numeral to an integer.",
    "Write a Rust trait for animals that speak, with two implementations and a function taking a trait object.",
    "Write the opening chapter of a fantasy novel about a stolen crown.",
    "Explain the difference between mutable and immutable data, with examples in Python.",
    "Write a C function that copies a string safely into a fixed-size buffer.",
    "Write a short story about a detective who solves crimes by smell.",
    "Write a Python function that groups a list of dictionaries by the value of a key.",
    "Explain how a binary heap works and how a priority queue uses it.",
    "Write a poem about the sea in four stanzas.",
    "Write a Ruby method that returns the sum of the even numbers in an array.",
    "Write a PHP function that sanitizes user input before showing it in HTML.",
    "Write a short story about a village that wakes up one morning to find the river gone.",
    "Explain what unit tests, integration tests and end-to-end tests are for.",
    "Write a Python context manager that temporarily changes the working directory.",
    "Write a speech for a best man at a wedding.",
    "Implement merge sort in Java and explain why it is stable.",
    "Write a Rust function that returns the longest common prefix of a slice of strings.",
    "Write a short story about an astronaut who hears music in space.",
    "Explain how a CPU cache works and why memory access patterns matter.",
    "Write a Python function that parses a date string in several formats and returns a datetime.",
    "Describe a thunderstorm from the point of view of a child.",
    "Write a shell script that checks whether a list of hosts respond to ping.",
    "Explain the difference between authentication and authorization.",
    "Write a short story about a knight who would rather be a gardener.",
    "Write a C# method that reads a text file and returns its lines sorted by length.",
    "Write a Python function that rotates a matrix by 90 degrees.",
    "Write a eulogy for a beloved family dog.",
    "Explain what an API is, and what makes a REST API good to use.",
];

/// Story subjects, letter recipients and topics, places: the prose of the
/// composed requests (`composed`).
const STORY_SUBJECTS: [&str; 24] = [
    "a clockmaker who can repair anything except her own watch",
    "a boy who finds a map in his grandfather's attic",
    "a city where it has not rained for ten years",
    "a chess player who plays one last game against an old rival",
    "a cat that follows a mail carrier on her route",
    "a translator who discovers a mistake in a famous treaty",
    "a family moving to a farm after living in the city",
    "a gardener who grows a vegetable the size of a car",
    "a street vendor who remembers every customer's order",
    "a scientist stranded at an Antarctic research station",
    "two brothers who inherit a failing bookshop",
    "an old tree that watches a town grow around it",
    "a girl who teaches her grandfather to use a computer",
    "a night-shift nurse during a snowstorm",
    "a detective who solves cases by listening to gossip",
    "a ferry captain on her last crossing before retirement",
    "a painter who can only paint at night",
    "a shy student who is chosen to give a speech",
    "a village that builds a bridge together",
    "a pilot who must land a small plane in fog",
    "a cook on a ship that has run out of salt",
    "a dog waiting at a train station every evening",
    "a beekeeper who talks to her bees",
    "an inventor whose machine works only once",
];

const LETTER_TOPICS: [&str; 12] = [
    "a friend who moved abroad, describing what has changed in the old neighbourhood",
    "a teacher who made a difference, thanking them years later",
    "a younger sibling starting their first job, with advice",
    "a landlord, asking politely for a broken heater to be repaired",
    "a future self, to be opened in ten years",
    "a neighbour, apologising for a noisy party",
    "a local newspaper, arguing for a new public park",
    "a pen pal in another country, describing a holiday tradition",
    "a company, complaining about a delayed delivery",
    "a retiring colleague, recalling a shared project",
    "a child who is afraid of the dark",
    "an author, explaining what their book meant to you",
];

const PLACES: [&str; 12] = [
    "a crowded market in the late afternoon",
    "an empty school on the first day of the summer holidays",
    "a harbour in winter",
    "a desert at night",
    "a small bakery before it opens",
    "a hospital waiting room",
    "a forest after a storm",
    "a library in an old university",
    "a highway diner at three in the morning",
    "a rooftop garden in a big city",
    "a fishing village during a festival",
    "an abandoned amusement park",
];

const LANGUAGES: [&str; 8] = ["Python", "Rust", "JavaScript", "C", "Go", "Java", "TypeScript", "C++"];

const TASKS: [&str; 24] = [
    "removes duplicate elements from a list while keeping their order",
    "counts the vowels in a string",
    "checks whether two strings are anagrams",
    "returns the second largest number in an array",
    "converts a number of seconds into hours, minutes and seconds",
    "validates an email address with simple rules",
    "flattens a nested list of integers",
    "computes the greatest common divisor of two numbers",
    "finds the longest word in a sentence",
    "groups a list of words by their first letter",
    "computes the running average of a stream of numbers",
    "checks whether a number is prime",
    "transposes a matrix",
    "converts a Roman numeral to an integer",
    "implements a simple queue with two stacks",
    "reads a text file and counts its lines, words and characters",
    "returns all permutations of a short string",
    "splits a list into chunks of a given size",
    "finds the first non-repeating character in a string",
    "computes the dot product of two vectors",
    "checks whether parentheses in an expression are balanced",
    "converts a string to title case",
    "finds the intersection of two lists",
    "implements run-length encoding of a string",
];

const CONCEPTS: [&str; 24] = [
    "what a closure is",
    "how DNS resolves a domain name",
    "the difference between a list and a tuple",
    "what a deadlock is and how to avoid one",
    "how public-key cryptography works",
    "what immutability means and why it helps",
    "how a compiler differs from an interpreter",
    "what unit tests are for",
    "how HTTPS protects a web page",
    "what a database index is",
    "the difference between stack and heap memory",
    "what version control is and why teams use it",
    "how a linked list differs from an array",
    "what an operating system does",
    "how sorting algorithms compare",
    "what a race condition is",
    "how floating-point numbers can be imprecise",
    "what a regular expression is",
    "how a web browser renders a page",
    "what dependency injection is",
    "the difference between TCP and UDP",
    "what a virtual machine is",
    "how caching speeds up programs",
    "what big data means",
];

/// Requests composed from the lists above, after the built-in ones: a code
/// task, a prose piece (story, letter or description), a code task, an
/// explanation, in turn; each combination once.
pub fn composed() -> Vec<String> {
    let (nl, nt) = (LANGUAGES.len(), TASKS.len());
    // each language in turn, its task three further on than the last one's
    let mut code = (0..nl * nt).map(|i| format!("Write a {} function that {}.", LANGUAGES[i % nl], TASKS[(i / nl + 3 * (i % nl)) % nt]));
    let mut explain = CONCEPTS.iter().map(|c| format!("Explain {c}, with an example.")).chain(CONCEPTS.iter().map(|c| format!("Explain to a beginner {c}.")));
    let stories = STORY_SUBJECTS.iter().map(|s| format!("Write a short story about {s}."));
    let letters = LETTER_TOPICS.iter().map(|t| format!("Write a letter to {t}."));
    let places = PLACES.iter().map(|p| format!("Describe {p}, as a novelist would."));
    let mut prose = stories.zip(letters.chain(places)).flat_map(|(a, b)| [a, b]);
    let mut out = Vec::new();
    while let (Some(p), Some(e)) = (prose.next(), explain.next()) {
        out.extend(code.next());
        out.push(p);
        out.extend(code.next());
        out.push(e);
    }
    out
}

/// Asks about a calibration passage (put before the passage).
pub const PASSAGE_ASKS: [&str; 4] = [
    "Summarize this passage:",
    "Write a Rust program that illustrates this passage, with comments:",
    "Explain this passage to a beginner:",
    "Write three questions about this passage and answer them:",
];

/// Up to `n` distinct request texts: `requests` (the built-in and composed ones when
/// empty), each once, alternating with asks about `passages` (each pair of
/// ask and passage once); when one kind runs out the other goes on, and
/// when both do the list ends early. A greedy answer to a request asked
/// twice would be the same text twice: wasted training, and a held-out
/// answer that was trained on.
pub fn texts(requests: &[String], passages: &[&str], n: usize) -> Vec<String> {
    let general: Vec<String> = if requests.is_empty() { BUILTIN.iter().map(|s| s.to_string()).chain(composed()).collect() } else { requests.to_vec() };
    let mut general = general.into_iter();
    // passages in a stride through the text, each ask in turn
    let n_asks = passages.len() * PASSAGE_ASKS.len();
    let stride = (7..).find(|&s| gcd(s, passages.len().max(1)) == 1).unwrap_or(1);
    let mut asks = (0..n_asks)
        .map(|p| format!("{}\n\n{}", PASSAGE_ASKS[(p / passages.len() + p % passages.len()) % PASSAGE_ASKS.len()], passages[p * stride % passages.len()]));
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let first = if out.len() % 2 == 0 { general.next().or_else(|| asks.next()) } else { asks.next().or_else(|| general.next()) };
        match first {
            Some(t) => out.push(t),
            None => break,
        }
    }
    out
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composed_requests_are_distinct_a_third_prose_and_no_benchmark() {
        let c = composed();
        let every: Vec<String> = BUILTIN.iter().map(|s| s.to_string()).chain(c.iter().cloned()).collect();
        let distinct: std::collections::HashSet<&String> = every.iter().collect();
        assert_eq!(distinct.len(), every.len(), "a request repeated");
        let prose = c.iter().filter(|r| r.starts_with("Write a short story") || r.starts_with("Write a letter") || r.starts_with("Describe")).count();
        assert!(prose * 4 >= c.len() && prose * 2 <= c.len(), "{prose} of {} prose", c.len());
        for r in &every {
            let l = r.to_lowercase();
            assert!(!l.contains("lighthouse") && !l.contains("bottle") && !l.contains("fibonacci"), "a benchmark prompt: {r}");
        }
    }

    #[test]
    fn alternates_and_never_repeats() {
        let t = texts(&[], &["a passage"], 4);
        assert_eq!(t[0], BUILTIN[0]);
        assert!(t[1].ends_with("a passage"));
        assert_eq!(t[2], BUILTIN[1]);
        // a request given once is asked once; then the passage's asks; then the list ends
        let own = vec!["x".to_string()];
        let t = texts(&own, &["p1", "p2"], 20);
        assert_eq!(t.len(), 1 + 2 * PASSAGE_ASKS.len());
        let mut seen = std::collections::HashSet::new();
        assert!(t.iter().all(|x| seen.insert(x.clone())), "a request repeats: {t:?}");
        let passages: Vec<String> = (0..50).map(|i| format!("passage {i}")).collect();
        let refs: Vec<&str> = passages.iter().map(|s| s.as_str()).collect();
        let t = texts(&[], &refs, 1000);
        let mut seen = std::collections::HashSet::new();
        assert!(t.iter().all(|x| seen.insert(x.clone())), "a request repeats");
        assert_eq!(t.len(), BUILTIN.len() + composed().len() + 50 * PASSAGE_ASKS.len(), "every request and every (ask, passage) once");
    }
}
