//! `simhost PROFILE DIR`: write a simulated host tree (used by the demo and by hand).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let names: Vec<&str> = simhost::Profile::ALL.iter().map(|p| p.name()).collect();
    let (Some(profile), Some(dir)) = (
        args.get(1).and_then(|p| simhost::Profile::from_name(p)),
        args.get(2),
    ) else {
        eprintln!("usage: simhost <{}> DIR", names.join("|"));
        std::process::exit(2);
    };
    if let Err(e) = simhost::SimHost::create(dir, profile) {
        eprintln!("simhost: writing {dir}: {e}");
        std::process::exit(1);
    }
}
