# gnuplot -e "data='bench/results/latest.dat'; out='bench/results/latest.png'" bench/plot.gp
set terminal pngcairo size 1500,650 font "sans,10" noenhanced
set output out
set title "heddle-fuse-launcher: each goal's figure / its limit (medians, same-run ratios); green = goal met\n(latency and time goals are upper limits: below 1 meets them; throughput goals are lower limits: above 1)"
set style fill solid 0.8 border -1
set boxwidth 0.6
set yrange [0:*]
set xtics rotate by 25 right nomirror
set lmargin 24
set bmargin 13
set grid ytics
unset key
set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 2 dt 2 lc rgb "#333333"
plot data using 1:3:($5 > 0 ? 0x2e8b57 : 0xc0392b):xtic(2) with boxes lc rgb variable, \
     data using 1:3:(sprintf("%.2f", $3)) with labels offset 0,0.7
