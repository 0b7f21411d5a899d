//! Requests the model answers for self-distillation (`graft --mtp
//! --self-distill N`): the text a draft head meets most is the model
//! answering a user, so the head trains on the model's own answers. Built-in
//! requests cover code in several languages and explanatory prose; half the
//! samples instead ask about calibration passages. `--distill-prompts FILE`
//! replaces the built-in list (one request per line).

/// General requests (none is a benchmark's prompt).
pub const BUILTIN: [&str; 40] = [
    "Write a Python function that checks whether a string is a palindrome, ignoring case and punctuation.",
    "Write a Rust function that parses a comma-separated line of integers into a Vec<i64>, returning an error for bad input.",
    "Implement binary search in C and explain its loop invariant.",
    "Write a JavaScript function that debounces another function.",
    "Write a SQL query that lists the ten customers with the highest total order value, with their totals.",
    "Write a Bash script that renames every .jpeg file in a directory to .jpg.",
    "Write a Go program that counts word frequencies in a text file and prints the top 20.",
    "Write a Java class for a bank account with deposit, withdraw and balance methods, with input checks.",
    "Explain the difference between a process and a thread.",
    "Explain what a hash table is and how collisions are handled.",
    "Write a Python class implementing a stack with push, pop and peek, and show how to use it.",
    "Write a C++ function that reverses a singly linked list in place.",
    "Explain Big-O notation with examples of O(1), O(log n), O(n) and O(n^2) algorithms.",
    "Write a Python script that reads a CSV file and prints the average of each numeric column.",
    "Write a Rust program that spawns four threads which each sum part of a vector, then combines the results.",
    "Explain how garbage collection differs from reference counting.",
    "Write a TypeScript interface for a user profile and a function that validates one.",
    "Write unit tests in Python (pytest) for a function that adds two numbers.",
    "Explain what recursion is and write a recursive function that computes a factorial.",
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Explain the HTTP request and response cycle for loading a web page.",
    "Write a regular expression that matches email addresses and explain each part.",
    "Write a function in C that counts the set bits of an unsigned integer.",
    "Explain what Git branches are and how merging differs from rebasing.",
    "Write a Python generator that yields prime numbers.",
    "Implement quicksort in Rust and explain how the pivot is chosen.",
    "Write a shell command pipeline that finds the five largest files under a directory.",
    "Explain the difference between TCP and UDP, with an example use of each.",
    "Write a Python decorator that measures how long a function takes.",
    "Explain how a compiler differs from an interpreter.",
    "Write a JavaScript function that deep-clones a plain object.",
    "Explain what a race condition is and how a mutex prevents it.",
    "Write a Python function that returns the n most common words in a text.",
    "Write a Rust enum for shapes (circle, rectangle, triangle) with a method computing the area.",
    "Explain the purpose of an index in a relational database, and when it slows things down.",
    "Describe how you would design a URL shortener service.",
    "Write a Kotlin data class for a book and a function that sorts a list of books by year.",
    "Explain what a closure is, with an example in JavaScript.",
    "Write a Python function that flattens an arbitrarily nested list.",
    "Explain the main ideas of object-oriented programming: encapsulation, inheritance, polymorphism.",
];

/// Asks about a calibration passage (put before the passage).
pub const PASSAGE_ASKS: [&str; 4] = [
    "Summarize this passage:",
    "Write a Rust program that illustrates this passage, with comments:",
    "Explain this passage to a beginner:",
    "Write three questions about this passage and answer them:",
];

/// The `n` request texts: `requests` (the built-in ones when empty) and
/// asks about `passages`, alternating (only requests without passages).
pub fn texts(requests: &[String], passages: &[&str], n: usize) -> Vec<String> {
    let general: Vec<String> = if requests.is_empty() { BUILTIN.iter().map(|s| s.to_string()).collect() } else { requests.to_vec() };
    let (mut g, mut p) = (0, 0);
    (0..n)
        .map(|i| {
            if i % 2 == 1 && !passages.is_empty() {
                let passage = passages[p * 7 % passages.len()];
                let ask = PASSAGE_ASKS[p % PASSAGE_ASKS.len()];
                p += 1;
                format!("{ask}\n\n{passage}")
            } else {
                g += 1;
                general[(g - 1) % general.len()].clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternates_and_cycles() {
        let t = texts(&[], &["a passage"], 4);
        assert_eq!(t[0], BUILTIN[0]);
        assert!(t[1].ends_with("a passage"));
        assert_eq!(t[2], BUILTIN[1]);
        let own = vec!["x".to_string()];
        assert_eq!(texts(&own, &[], 3), vec!["x", "x", "x"]);
    }
}
