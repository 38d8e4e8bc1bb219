//! `lockoutctl`: the thin binary around [`lockoutctl::run`].

// `replay` and `verify` fold whole streams through lockoutd's batch folder: the same
// allocator as lockoutd.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let code = lockoutctl::run(std::env::args_os(), &mut std::io::stdout());
    std::process::exit(code);
}
