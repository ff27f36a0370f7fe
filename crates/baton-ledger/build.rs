//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds the folder at
//! compile time, and on stable Rust Cargo cannot see that the macro read it.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
