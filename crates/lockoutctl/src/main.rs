//! `lockoutctl`: the thin binary around [`lockoutctl::run`].

fn main() {
    let code = lockoutctl::run(std::env::args_os(), &mut std::io::stdout());
    std::process::exit(code);
}
