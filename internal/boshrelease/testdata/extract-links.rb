#!/usr/bin/env ruby
# Regenerates release-links.json: the link declarations (name, type, optional) of the jobs
# that cf-deployment keeps next to netman, read from each release's own job specs.
#
#   ruby extract-links.rb MANIFEST... -- RELEASE=GIT_DIR...
#
# MANIFEST: interpolated cf-deployment manifests (every job they use is listed);
# RELEASE=GIT_DIR[=URL]: a bosh release's name and a git clone of its repository (the newest
# commit is read), and the repository's URL when the clone has no origin. netman's own jobs are left out: the tests read them from jobs/.
# RELEASE/JOB=OTHER_JOB: a job missing from that commit is read from OTHER_JOB's spec (a
# predecessor of the same shape); the fixture says so.
require "json"
require "yaml"

sep = ARGV.index("--") or abort "usage: extract-links.rb MANIFEST... -- RELEASE=GIT_DIR..."
manifests, pairs = ARGV[0...sep], ARGV[(sep + 1)..].map { |a| a.split("=", 2) }
repos = pairs.reject { |k, _| k.include?("/") }.to_h { |k, v| [k, v.split("=", 2)] }
stand_ins = pairs.select { |k, _| k.include?("/") }.to_h

wanted = Hash.new { |h, k| h[k] = [] }
manifests.each do |f|
  m = YAML.safe_load(File.read(f), aliases: true)
  (m["instance_groups"] + (m["addons"] || [])).each do |g|
    g["jobs"].each { |j| wanted[j["release"]] << j["name"] unless j["release"] == "netman" }
  end
end

git = ->(dir, *args) { IO.popen(["git", "--git-dir", dir, *args], &:read) }
out = {}
wanted.keys.sort.each do |release|
  abort "no repository given for release #{release}" unless repos[release]
  dir, url = repos[release]
  commit = git.(dir, "rev-parse", "HEAD").strip
  url ||= git.(dir, "config", "--get", "remote.origin.url").strip
  jobs = {}
  wanted[release].uniq.sort.each do |job|
    read_from = stand_ins.fetch("#{release}/#{job}", job)
    text = git.(dir, "show", "#{commit}:jobs/#{read_from}/spec")
    abort "#{release}: no jobs/#{read_from}/spec at #{commit}" if text.empty?
    spec = YAML.safe_load(text, aliases: true) || {}
    jobs[job] = {}
    jobs[job]["read_from"] = "jobs/#{read_from}/spec (jobs/#{job} is newer than this commit)" if read_from != job
    jobs[job].merge!(
      "consumes" => (spec["consumes"] || []).map { |c| { "name" => c["name"], "type" => c["type"], "optional" => !!c["optional"] } },
      "provides" => (spec["provides"] || []).map { |p| { "name" => p["name"], "type" => p["type"] } },
    )
  end
  out[release] = { "source" => "#{url}@#{commit}", "jobs" => jobs }
end
puts JSON.pretty_generate(out)
