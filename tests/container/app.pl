#!/usr/bin/perl
# app.pl - the app container of tests/container/test_container.py: the
# workload picket fronts in the pod. It runs on the base image itself
# (localhost/debian:12-slim has perl-base, and nothing here needs more), so
# the test needs no other image.
#
#   perl app.pl BIND PORT HOLD_DIR
#
# HTTP/1.1, one request per connection (Connection: close), one process per
# connection. Prints "ready" once it listens and "request METHOD PATH" as each
# request head arrives (before answering), on stdout, unbuffered: the test
# reads them with `podman logs` to know a request is in flight.
#
#   GET /            200 "hello from the app\n"
#   GET /headers     200, the request's header lines as received, one per line
#   GET /hold/NAME   waits until HOLD_DIR/hold-NAME exists (at most 300 s),
#                    then 200 "released\n"
#   anything else    404
use strict;
use warnings;
use IO::Socket::INET;

my ($bind, $port, $hold_dir) = @ARGV;
die "usage: app.pl BIND PORT HOLD_DIR\n" unless defined $hold_dir;
$| = 1;
# PID 1 of its container: without a handler SIGTERM would be ignored.
$SIG{TERM} = sub { exit 0 };
$SIG{CHLD} = 'IGNORE';    # children are reaped by the kernel

my $srv = IO::Socket::INET->new(LocalAddr => $bind, LocalPort => $port, Proto => 'tcp',
                                Listen => 64, ReuseAddr => 1)
    or die "app.pl: listen on $bind:$port: $!\n";
print "ready\n";

while (1) {
    my $c = $srv->accept or next;
    my $pid = fork;
    if (!defined $pid || $pid) {
        close $c;
        next;
    }
    close $srv;
    $SIG{TERM} = 'DEFAULT';
    serve($c);
    exit 0;
}

sub serve {
    my ($c) = @_;
    local $/ = "\n";
    my $line = <$c>;
    return unless defined $line;
    $line =~ s/\r?\n\z//;
    my ($method, $path) = split / /, $line;
    return unless defined $path;
    my @headers;
    while (defined(my $h = <$c>)) {
        $h =~ s/\r?\n\z//;
        last if $h eq '';
        push @headers, $h;
    }
    print "request $method $path\n";
    my ($status, $body) = (404, "not found\n");
    if ($path eq '/') {
        ($status, $body) = (200, "hello from the app\n");
    } elsif ($path eq '/headers') {
        ($status, $body) = (200, join('', map { "$_\n" } @headers));
    } elsif ($path =~ m{\A/hold/([A-Za-z0-9_-]+)\z}) {
        my $file = "$hold_dir/hold-$1";
        my $waited = 0;
        while (!-e $file && $waited < 300) {
            select(undef, undef, undef, 0.05);
            $waited += 0.05;
        }
        ($status, $body) = -e $file ? (200, "released\n") : (504, "hold timed out\n");
    }
    my $reason = $status == 200 ? 'OK' : 'Other';
    print $c "HTTP/1.1 $status $reason\r\nContent-Type: text/plain\r\n"
        . "Content-Length: " . length($body) . "\r\nConnection: close\r\n\r\n$body";
    close $c;
}
