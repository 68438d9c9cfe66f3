fn main() {
    let _ = lfeval::yaml::load_str("x", "a: 1");
}
