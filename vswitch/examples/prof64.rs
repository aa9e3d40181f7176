fn main() {
    let case = kaos_vswitch::bench::CASES[0];
    let r = kaos_vswitch::bench::measure(case, 1).expect("bench");
    println!("{:.2} Mpps", r[0].switch_fps / 1e6);
}
