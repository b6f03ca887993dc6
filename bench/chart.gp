# bench/chart.gp: the chart of bench/run (bench/README.md).
#
#   gnuplot -e "datafile='bench/out/chart.dat'; outfile='bench/out/bench.png'" bench/chart.gp
#
# datafile (written by bench/run): one line per system,
#   system  c1_rps  c64_rps  pss_mib      ("?" for a value not measured)
# Left panel: requests per second at c=1 and c=64 (medians over rounds);
# right panel: PSS of all the system's processes after its c=64 run.

if (!exists("datafile")) datafile = "bench/out/chart.dat"
if (!exists("outfile")) outfile = "bench/out/bench.png"

if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
    set terminal pngcairo size 1300,520 font "sans,10"
} else {
    set terminal png size 1300,520
}
set output outfile
set datafile missing "?"

set multiplot layout 1,2 title "bench/run: non-streaming POST /v1/chat/completions via each system (medians over rounds)"

set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set yrange [0:*]
set offsets 0, 0, graph 0.08, 0
set xtics nomirror
set key top right

set title "Throughput (wrk)"
set ylabel "requests / s"
# Two series, gap 1: the bars of row i stand at i - 1/6 and i + 1/6.
plot datafile using 2:xtic(1) title "c=1  (-t1 -c1)" lc rgb "#7aa6d6", \
     ''       using 3         title "c=64 (-t2 -c64)" lc rgb "#1f4e89", \
     ''       using ($0 - 1.0/6):2:(sprintf("%.0f", $2)) with labels offset 0,0.7 font ",8" notitle, \
     ''       using ($0 + 1.0/6):3:(sprintf("%.0f", $3)) with labels offset 0,0.7 font ",8" notitle

set title "Memory after the c=64 run"
set ylabel "PSS, MiB (all processes of the system)"
set key off
plot datafile using 4:xtic(1) lc rgb "#c8702a", \
     ''       using 0:4:(sprintf("%.1f", $4)) with labels offset 0,0.7 font ",8" notitle

unset multiplot
